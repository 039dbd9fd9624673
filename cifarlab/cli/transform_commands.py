"""`cifarlab run` and `cifarlab transform ...`."""
from __future__ import annotations

from pathlib import Path

import click

from ..models import list_models, parse_model_args
from ..pipeline import DEFAULT_PIPELINE
from ..training.losses import LOSSES
from ..training.loggers import LOGGERS
from ..transform.config import INITS, MONITORS, SCHEDULES, TransformConfig
from .app import cli, given_options, transform

DEFAULTS = TransformConfig()


def data_options(f):
    f = click.option("--data-root", default=None, help="Where CIFAR-10 is cached/downloaded "
                     "[default: $CIFARLAB_DATA or ~/.cache/cifarlab/data].")(f)
    f = click.option("--data", default=DEFAULTS.data, show_default=True,
                     help="cifar10 (falls back to 'sample' when it cannot be had), sample "
                          "(photos shipped with scikit-image), or a folder of images.")(f)
    return f


def training_options(f):
    options = [
        click.option("--pipeline", default=DEFAULT_PIPELINE, show_default=True,
                     help="Comma-separated deterministic steps (see README: pipeline syntax)."),
        click.option("--model", default=DEFAULTS.model, show_default=True,
                     help=f"Model from the registry: {', '.join(list_models())}."),
        click.option("--model-args", default="", help="Model options, e.g. 'hidden=32,rank=2'."),
        click.option("--init", type=click.Choice(INITS), default=DEFAULTS.init, show_default=True,
                     help="auto: sepnet starts from the probed operator (a linear pipeline's, else its spatial "
                          "steps' beyond rank 1); exact: the linear operator or an error; random: random weights."),
        click.option("--loss", type=click.Choice(LOSSES), default=DEFAULTS.loss, show_default=True),
        click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True, help="Adam learning rate."),
        click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True),
        click.option("--epochs", type=int, default=None,
                     help="Epoch cap [default: 100; none under --time-budget, where the clock is the limit]."),
        click.option("--time-budget", type=float, default=None,
                     help="Seconds of training (across resumes); spent in full unless --epochs or --patience is given."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=DEFAULTS.schedule, show_default=True,
                     help="auto: plateau under --time-budget without --epochs, else none."),
        click.option("--patience", type=int, default=None,
                     help="Early stopping: epochs without improvement [default: 5; off under --time-budget]."),
        click.option("--min-delta", type=float, default=DEFAULTS.min_delta, show_default=True),
        click.option("--monitor", type=click.Choice(MONITORS), default=DEFAULTS.monitor, show_default=True,
                     help="Loss that early stopping watches."),
        click.option("--val-fraction", type=float, default=DEFAULTS.val_fraction, show_default=True),
        click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True),
        click.option("--device", default=DEFAULTS.device, show_default=True, help="auto|cpu|cuda|mps."),
        click.option("--threads", type=int, default=None,
                     help="CPU threads for torch [default: torch's]; 1 avoids stalls when other processes share the cores."),
        click.option("--logger", type=click.Choice(LOGGERS), default=DEFAULTS.logger, show_default=True),
        click.option("--out", default=None, help="Run folder [default: runs/<timestamp>-<model>]."),
        click.option("--resume", default=None, type=click.Path(), help="Continue the run in this folder."),
        click.option("--quiet", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        f = option(f)
    return data_options(f)


def config_from(options: dict, **fixed) -> TransformConfig:
    keys = set(TransformConfig.__dataclass_fields__)
    values = {k: v for k, v in options.items() if k in keys}
    values["model_args"] = parse_model_args(options.get("model_args"))
    values.update(fixed)
    return TransformConfig(**values).validate()


def _train(options: dict, given: set[str]) -> Path:
    """A new run from the options, or with --resume the saved run with the options given."""
    from ..runs import resumed_config
    from ..transform import train
    quiet = options.get("quiet", False)
    if options.get("resume"):
        changes = {k: options[k] for k in sorted(given - {"resume", "quiet", "bench", "bench_images"})}
        config = resumed_config(options["resume"], TransformConfig, changes)
        return train(config, resume=options["resume"], quiet=quiet)
    return train(config_from(options), out=options.get("out"), quiet=quiet)


@transform.command("train")
@training_options
@click.pass_context
def train_command(ctx, **options):
    """Train a network to reproduce --pipeline; writes a run folder with the report.

    With --resume RUN_DIR the run continues with its saved settings; only --epochs,
    --time-budget, --device, --threads and --logger may be given with it (new limits, or another device)."""
    run_dir = _train(options, given_options(ctx))
    click.echo(str(run_dir))


@cli.command("run")
@training_options
@click.option("--bench/--no-bench", default=True, show_default=True,
              help="Run the inference benchmark on the trained model.")
@click.option("--bench-images", type=int, default=10000, show_default=True,
              help="Images in the benchmark workload (the test split, tiled).")
@click.pass_context
def run_command(ctx, bench, bench_images, **options):
    """The main job: train the default model on the default pipeline, evaluate, report."""
    run_dir = _train(options, given_options(ctx))
    if bench:
        from ..bench import run_benchmark
        run_benchmark(run_dir, images=bench_images, quiet=options["quiet"])
    click.echo(str(run_dir))


@transform.command("eval")
@click.argument("run_dir")
@data_options
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True)
def eval_command(run_dir, data, data_root, split, device):
    """Evaluate a trained run on other data (PSNR, SSIM, MSE, cosine accuracy)."""
    import json

    from ..data import load_images
    from ..devices import resolve_device
    from ..evaluation import fidelity, predict
    from ..pipeline import Pipeline, ground_truth
    from ..transform.artifact import build_from_checkpoint, read_checkpoint

    from .. import model_file
    ckpt = read_checkpoint(model_file(run_dir))
    model = build_from_checkpoint(ckpt)
    images = load_images(data, split, data_root)
    x = images.float()
    target = ground_truth(x, Pipeline.parse(ckpt["pipeline"]))
    dev = resolve_device(device)
    scores = fidelity(predict(model.to(dev), x, device=dev), target)
    click.echo(json.dumps({"data": images.name, **scores}, indent=2))


@transform.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", type=click.Choice(["pt2", "onnx"]), default="pt2", show_default=True,
              help="pt2: a torch.export program; onnx: ONNX (checked in onnxruntime against the model).")
@click.option("--out", default=None, help="Output file [default: RUN_DIR/model.pt2 or RUN_DIR/model.onnx].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file (never the run's own "
                                                "model.pt, last.pt or config.json).")
def export_command(run_dir, fmt, out, overwrite):
    """Write the network as a torch.export program (model.pt2) or as ONNX (model.onnx)."""
    echo_export(run_dir, fmt, out, overwrite, "transform")


def echo_export(run_dir, fmt, out, overwrite, kind) -> None:
    from ..export import UNTRUSTED_PT2, export_run
    path, check = export_run(run_dir, fmt, out, overwrite, kind)
    if check is None:
        click.echo(f"{path}  (load with: torch.export.load({str(path)!r}).module(); {UNTRUSTED_PT2})")
    else:
        click.echo(f"{path}  (ONNX opset {check['opset']}, dynamic batch; onnxruntime agrees with PyTorch on "
                   f"{check['checked_on']}: max |difference| {check['max_abs_difference']:.2g}, top-1 agreement "
                   f"{check['top1_agreement']:.0%})")


@transform.command("apply")
@click.argument("run_dir")
@click.argument("src")
@click.argument("dst")
@click.option("--output-format", type=click.Choice(["png", "npy"]), default="png", show_default=True,
              help="png: one PNG per input, mirroring SRC's tree; npy: uint8 shards of --shard-size images "
                   "with an index of their sources (see docs/scale.md).")
@click.option("--shard-size", type=int, default=1024, show_default=True, help="Inputs per shard (npy).")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Images per task (png): per model call and per read/write chunk.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: Ray Data (needs cifarlab[ray]).")
@click.option("--workers", type=int, default=None,
              help="local engine: processes that decode and encode images [default: the cores; 0: this process].")
@click.option("--ray-address", default=None,
              help="ray engine: join the cluster at HOST:PORT [default: $RAY_ADDRESS, else start a local instance].")
@click.option("--ray-cpus", type=int, default=None, help="ray engine: CPUs of the local instance [default: the cores].")
@click.option("--ray-actors", type=int, default=None,
              help="ray engine: how many run at once [default: one model actor per GPU; without GPUs, one task per CPU of the cluster, each running read, model and write].")
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Rewrite outputs that exist already [default: keep them, "
                                                "so a re-run finishes an interrupted job].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def apply_command(run_dir, src, dst, output_format, shard_size, batch_size, engine, workers, ray_address,
                  ray_cpus, ray_actors, device, overwrite, quiet):
    """Run a trained network over the images of SRC (a folder, or a text file listing image
    paths one a line) and write them into DST: PNGs in the same tree, or uint8 .npy shards.
    Outputs are round(clamp(model, 0, 1) * 255); existing outputs are kept, so a re-run
    resumes; unreadable files are listed in DST/apply-failures.txt."""
    from ..transform.apply import apply_folder
    from ..transform.engines import make_engine
    runner = make_engine(engine, workers, ray_address, ray_cpus, ray_actors)
    result = apply_folder(Path(run_dir), Path(src), Path(dst), batch_size, device, overwrite, quiet=quiet,
                          output_format=output_format, shard_size=shard_size, engine=runner)
    who = (f"{result.workers} worker(s)" if result.engine == "local" else
           f"ray, {result.workers} at once, start-up {result.startup_seconds:.1f} s, "
           f"shutdown {result.shutdown_seconds:.1f} s")
    click.echo(f"wrote {result.written} image(s) to {dst} in {result.seconds:.1f} s "
               f"({result.images_per_second:,.0f} images/s, {who})"
               + (f"; kept {result.existing} existing" if result.existing else "")
               + (f"; skipped {result.unreadable} unreadable (listed in apply-failures.txt)"
                  if result.unreadable else ""))


@transform.command("compare")
@data_options
@click.option("--pipeline", default=DEFAULT_PIPELINE, show_default=True)
@click.option("--models", default="all", show_default=True, help="Comma-separated registry names, or all.")
@click.option("--time-budget", type=float, default=60, show_default=True, help="Seconds per model.")
@click.option("--epochs", type=int, default=None, help="Epoch cap per model [default: none, the budget rules].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default=None, help="A new or empty folder [default: runs/<timestamp>-compare].")
def compare_command(data, data_root, pipeline, models, time_budget, epochs, seed, device, out):
    """Train every registry model on the same data and budget; writes compare.md."""
    from datetime import datetime

    from ..transform.compare import compare_models
    out = out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-compare"
    names = list_models() if models == "all" else [m.strip() for m in models.split(",") if m.strip()]
    path = compare_models(names, data=data, data_root=data_root, pipeline=pipeline, time_budget=time_budget,
                          epochs=epochs, seed=seed, device=device, out=Path(out))
    click.echo(path.read_text())


@transform.command("survey")
@data_options
@click.option("--time-budget", type=float, default=300, show_default=True, help="Seconds of training per pipeline.")
@click.option("--steps", default="all", show_default=True, help="Registry steps to survey (comma-separated), or all.")
@click.option("--chains/--no-chains", default=True, show_default=True,
              help="Also survey the two- and three-step chains of hard steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default=None, help="A new folder, or an interrupted survey to resume "
                                          "[default: runs/<timestamp>-survey].")
@click.option("--model-args", default="", help="Options of the default model for every run, e.g. 'color=false' "
                                               "to learn what the exact fronts would do.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def survey_command(data, data_root, time_budget, steps, chains, seed, device, out, model_args, quiet):
    """How well the default model learns each registry step (and chains of hard steps): one
    budgeted run per pipeline; writes survey.md, survey.json and survey.png."""
    from datetime import datetime

    from ..transform.survey import run_survey
    out = out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-survey"
    path = run_survey(data, out, time_budget, steps, chains, seed, device, data_root, quiet,
                      model_args=parse_model_args(model_args))
    click.echo(path.read_text())
