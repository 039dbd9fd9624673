"""Atomic file writes: a run folder never holds a half-written file.

Each write goes to a hidden temporary file beside the target, then `os.replace` puts it in
place. The temporary file is created like any other new file, so the user's umask decides
who may read the result (mkstemp would make every artifact 0600). Temporary files are
removed on every exit path Python sees (errors, Ctrl-C, SIGTERM); after a SIGKILL the next
command that opens the run folder removes them (`remove_stale_temporaries`).
"""
from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import CifarlabError

TEMPORARY_MARK = ".tmp."


def _temporary_path(path: Path) -> Path:
    return path.parent / f".{path.stem}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"


def _cannot_write(path: Path, error: OSError) -> CifarlabError:
    """Name the file the user asked for and its folder, never our temporary file."""
    reason = error.strerror or type(error).__name__
    return CifarlabError(f"cannot write {str(path)!r} (folder {str(path.parent)!r}): {reason}")


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    tmp = _temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, e) from None

    def create_and_write():
        # Created under `_put_in_place`'s guard: a SIGTERM (KeyboardInterrupt) landing between the
        # creation and the write still removes it (a run's folder had kept a .last.tmp.* file).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode 0666 & ~umask
        write(str(tmp))
    return _put_in_place(tmp, path, create_and_write)


def _put_in_place(tmp: Path, path: Path, write: Callable[[], None]) -> Path:
    """Run `write` (which fills `tmp`), then rename `tmp` to `path`; on any failure remove `tmp`."""
    try:
        write()
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _cannot_write(path, e) from None
        raise
    return path


def write_bytes(path, data: bytes, make_parents: bool = True) -> Path:
    """`data` at `path`, atomically, in the fewest system calls (create, write, close, rename):
    `transform apply` writes one small file per image, where `_atomic`'s extra open by name
    cost more than encoding the PNG. `make_parents=False` when the caller made the folder."""
    path = Path(path)
    tmp = _temporary_path(path)
    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot_write(path, e) from None

    def write_all():
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # under the guard, as in `_atomic`
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    return _put_in_place(tmp, path, write_all)


def write_files(items: Iterable[tuple[Any, bytes]]) -> int:
    """Each (path, data) written with `write_bytes`, each folder made once (before its first
    file): the many small files of `transform apply`. Returns how many were written."""
    made: set[str] = set()
    count = 0
    for path, data in items:
        folder = os.path.dirname(str(path))
        write_bytes(path, data, make_parents=folder not in made)
        made.add(folder)
        count += 1
    return count


def remove_stale_temporaries(folder: Path) -> int:
    """Temporary files left by a process that was killed mid-write (SIGKILL); call only while
    holding the folder (runs.RunFolder), so no live writer owns them."""
    count = 0
    for stale in Path(folder).glob(f".*{TEMPORARY_MARK}*"):
        try:
            stale.unlink()
            count += 1
        except OSError:
            pass
    return count


def _json_safe(value: Any) -> Any:
    """JSON has no inf/nan: store them as strings so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path, data: dict) -> Path:
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n"
    return write_text(path, text)


def write_text(path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic(Path(path), write)


def torch_save(obj, path) -> Path:
    import torch  # here, not at the top: image worker processes import this module without torch
    return _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def save_figure(fig, path) -> Path:
    suffix = Path(path).suffix.lstrip(".") or "png"
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format=suffix, dpi=110, bbox_inches="tight"))


def read_json(path) -> dict:
    """A JSON object from `path`; a missing, unreadable or damaged file is a one-line error."""
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CifarlabError(f"{str(path)!r} does not exist") from None
    except OSError as e:
        raise CifarlabError(f"cannot read {str(path)!r}: {e.strerror or type(e).__name__}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CifarlabError(f"{str(path)!r} is damaged: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CifarlabError(f"{str(path)!r} is damaged: expected a JSON object, got {type(data).__name__}")
    return data
