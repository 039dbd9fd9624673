"""The `cifarlab` command: a thin layer over the Python API.

    cifarlab run                           # the main job, end to end
    cifarlab transform train|eval|export|apply|compare|bench ...
    cifarlab classify train|eval|predict|search ...
"""
from __future__ import annotations

import signal
import sys
import threading
import warnings

import click

from ..errors import CifarlabError
from .app import cli


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _terminate(signum, frame):
    """SIGTERM (what Slurm, docker and systemd send) takes Ctrl-C's path: the run saves and
    resumes, temporary files are removed. Under torchrun the trainer turns it into a flag."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    warnings.showwarning = _warning_line
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return _run(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv) -> int:
    try:
        cli.main(args=argv, prog_name="cifarlab", standalone_mode=False)
    except CifarlabError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except OSError as e:  # disk full, permission denied: the user's environment, not a bug
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        return 2
    return 0
