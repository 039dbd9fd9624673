"""The root command group; subcommand modules attach themselves to it on import."""
import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cifarlab")
def cli():
    """Distill image-transform pipelines into fast networks, and a CIFAR-10 classification lab."""


def given_options(ctx: click.Context) -> set[str]:
    """The options the user gave (on the command line or in the environment), not defaults."""
    from click.core import ParameterSource
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


@cli.group()
def transform():
    """Train, evaluate, export, apply and benchmark pipeline-distilling networks."""


from . import transform_commands  # noqa: E402,F401  (registers the commands)
from . import classify_commands  # noqa: E402,F401
from . import bench_commands  # noqa: E402,F401
