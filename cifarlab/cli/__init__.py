"""The `cifarlab` command: a thin layer over the Python API.

    cifarlab run                           # the main job, end to end
    cifarlab transform train|eval|export|apply|compare|bench ...
    cifarlab classify train|eval|predict|search ...
"""
from __future__ import annotations

import sys
import warnings

import click

from ..errors import CifarlabError
from .app import cli


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    warnings.showwarning = _warning_line
    try:
        cli.main(args=argv, prog_name="cifarlab", standalone_mode=False)
    except CifarlabError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except OSError as e:  # disk full, permission denied: the user's environment, not a bug
        click.echo(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), err=True)
        return 1
    return 0
