"""What every run config shares: a plain dict for config.json, and back."""
from __future__ import annotations

from dataclasses import asdict, fields


class RunConfig:
    """Mixin for dataclass configs: `from_dict` ignores keys it does not know (newer or
    informational fields in an older config.json), so old runs stay loadable."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
