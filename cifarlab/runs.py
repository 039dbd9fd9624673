"""The run-folder contract every command shares: claim a new folder atomically, hold a folder
while working in it, read its config.json, and resume it with its saved settings.

- A new folder is claimed by creating its lock file with O_EXCL: of two processes given the
  same --out at the same moment, exactly one wins; the other gets a one-line error.
- While a command works in a folder it holds an advisory lock (flock) on that file, released
  by the kernel when the process ends, however it ends. A second training, resume or
  benchmark of the same folder is refused while the first one runs.
- Resuming keeps every saved setting. Only the options in `RESUMABLE` may change; any other
  option given with --resume is refused, by name, instead of being silently ignored.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import CifarlabError
from .io import read_json, remove_stale_temporaries

LOCK_NAME = ".cifarlab.lock"
# settings that may change when a run is resumed: its limits, and where and how fast it runs
RESUMABLE = ("epochs", "time_budget", "device", "threads", "logger")


class RunFolder:
    """A folder held by this process (see the module docstring); use as a context manager."""

    def __init__(self, path: Path, fd: int, created: bool = False):
        self.path, self._fd, self.created = path, fd, created

    @classmethod
    def create(cls, path) -> "RunFolder":
        """Claim `path` for a new run: created if absent, taken if empty, refused otherwise.
        Whoever holds the lock on an empty folder owns it, so of two processes racing for one
        --out exactly one goes on."""
        path = Path(path)
        created = not path.exists()
        if path.is_dir() and any(entry.name != LOCK_NAME for entry in path.iterdir()):
            raise CifarlabError(f"run folder {str(path)!r} already exists and is not empty; "
                                f"choose another --out or resume it with --resume")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CifarlabError(f"--out {str(path)!r} is a file: expected a new or empty folder") from None
        except OSError as e:
            raise CifarlabError(f"cannot create run folder {str(path)!r}: {e.strerror}") from None
        folder = cls._locked(path, created)
        if any(entry.name != LOCK_NAME for entry in path.iterdir()):  # filled while we took the lock
            folder.release()
            raise CifarlabError(f"run folder {str(path)!r} already exists and is not empty; "
                                f"choose another --out or resume it with --resume")
        return folder

    @classmethod
    def open(cls, path, purpose: str = "use") -> "RunFolder":
        """Hold an existing run folder (resume, benchmark); its stale temporary files are removed."""
        path = Path(path)
        if not path.is_dir():
            raise CifarlabError(f"run folder {str(path)!r} does not exist"
                                + (" (it is a file)" if path.exists() else ""))
        folder = cls._locked(path, False, purpose)
        remove_stale_temporaries(path)
        return folder

    @classmethod
    def _locked(cls, path: Path, created: bool, purpose: str = "create") -> "RunFolder":
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CifarlabError(f"cannot {purpose} run folder {str(path)!r}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CifarlabError(f"run folder {str(path)!r} is in use by another cifarlab process; "
                                f"wait for it to finish or choose another folder") from None
        return cls(path, fd, created)

    def abandon(self) -> None:
        """A new run that saved nothing worth keeping: remove what it wrote (and the folder, if it
        made it), so the same --out can be used again."""
        import shutil
        for entry in self.path.iterdir():
            if entry.name != LOCK_NAME:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        self.release()
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_run_config(run_dir, config_cls):
    """The config.json of a run folder as `config_cls`, with one-line errors for a missing,
    damaged or foreign file."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CifarlabError(f"{str(run_dir)!r} is not a run folder: it has no config.json")
    return config_cls.from_dict(read_json(path), source=str(path)).validate()


def resumed_config(run_dir, config_cls, changes: dict | None = None):
    """The saved config of `run_dir` with `changes` applied; only RESUMABLE settings may change."""
    changes = dict(changes or {})
    refused = [k for k in changes if k not in RESUMABLE]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise CifarlabError(f"--resume continues {str(run_dir)!r} with its saved settings; these options cannot "
                            f"change on resume: {flags} (only {allowed} can)")
    if not (Path(run_dir) / "last.pt").is_file():
        raise CifarlabError(f"cannot resume {str(run_dir)!r}: expected a run folder with config.json and last.pt")
    config = read_run_config(run_dir, config_cls)
    for key, value in changes.items():
        setattr(config, key, value)
    return config.validate()


def config_to_resume(run_dir, config_cls, config=None):
    """The saved config of `run_dir`; a `config` given beside it (Python API) may differ from
    it only in the RESUMABLE settings, and then it is the one used."""
    saved = resumed_config(run_dir, config_cls)
    if config is None:
        return saved
    a, b = saved.to_dict(), config.to_dict()
    changed = [k for k in a if k not in RESUMABLE and a[k] != b.get(k)]
    if changed:
        raise CifarlabError(f"--resume continues {str(run_dir)!r} with its saved settings; these differ: "
                            f"{', '.join(changed)} (only {', '.join(RESUMABLE)} can change)")
    return config
