"""What every run config shares: a plain dict for config.json, and back, with its types checked."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar

from .errors import CifarlabError

_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
          "None": (type(None),)}
_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
          "dict": "an object", "None": "null"}


def _check_type(name: str, value, annotation: str, source: str):
    """The value as the field's type (an int where a float goes becomes a float), or a one-line error."""
    kinds = [part.strip() for part in str(annotation).split("|")]
    for kind in kinds:
        allowed = _TYPES.get(kind)
        if allowed is None:
            return value  # a type this checker does not know: left to validate()
        if isinstance(value, bool) and kind in ("int", "float"):
            continue  # JSON true is not a number
        if isinstance(value, allowed):
            return float(value) if kind == "float" else value
    expected = " or ".join(_NAMES.get(k, k) for k in kinds)
    raise CifarlabError(f"{source}: setting {name!r} must be {expected}, got {value!r}")


class RunConfig:
    """Mixin for dataclass configs. `kind` names the run type in config.json, so a folder of
    one kind is never resumed or read as the other. `from_dict` checks every known key's
    type and ignores keys it does not know (newer or informational fields in an older
    config.json), so old runs stay loadable and damaged ones fail in one line."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config"):
        if not isinstance(data, dict):
            raise CifarlabError(f"{source}: expected a JSON object, got {type(data).__name__}")
        found = data.get("kind") or ("classify" if "recipe" in data else "transform" if "pipeline" in data else None)
        if cls.kind and found and found != cls.kind:
            raise CifarlabError(f"{source} belongs to a {found} run, not a {cls.kind} run "
                                f"(use 'cifarlab {found} ...' for it)")
        values = {f.name: _check_type(f.name, data[f.name], f.type, source) for f in fields(cls) if f.name in data}
        try:
            return cls(**values)
        except TypeError as e:
            raise CifarlabError(f"{source}: {e}") from None
