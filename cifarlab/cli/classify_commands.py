"""`cifarlab classify train|eval|predict|search`: thin wrappers over cifarlab.classify."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import CifarlabError
from ..models.registry import parse_model_args
from ..training.loggers import LOGGERS
from .app import cli, given_options

FROM_RECIPE = "[default: from --recipe]"


@cli.group()
def classify():
    """Train, evaluate, search and apply CIFAR-10 classifiers (recipes: baseline, seed004, fast, airbench94)."""


def _recipe_help() -> str:
    from ..classify.recipes import DEFAULT_RECIPE, RECIPES
    return f"Preset for every option not given: {', '.join(RECIPES)}.  [default: {DEFAULT_RECIPE}]"


def data_options(f):
    options = [
        click.option("--data", default="cifar10", show_default=True,
                     help="cifar10, or an ImageFolder tree (one subfolder per class; train/ and test/ "
                          "subfolders give a test split). Unlabelled sources are refused."),
        click.option("--data-root", default=None,
                     help="Where CIFAR-10 is cached  [default: $CIFARLAB_DATA or ~/.cache/cifarlab/data]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def recipe_options(f):
    """The options every recipe sets; None means 'the recipe's value'."""
    options = [
        click.option("--recipe", default="fast", help=_recipe_help()),
        click.option("--model", default=None, help=f"Classifier from the registry (baseline_cnn, deep_cnn, "
                                                   f"resnet_bottleneck, fastnet, resnet18_tv).  {FROM_RECIPE}"),
        click.option("--model-args", default=None,
                     help=f"Model options, e.g. 'widths=32-64-128,dropout=0.1'.  {FROM_RECIPE}"),
        click.option("--activation", default=None,
                     help="relu|leaky_relu|elu|gelu, for models with an activation  [default: the model's]."),
        click.option("--pretrained", is_flag=True, default=False,
                     help="Fine-tune torchvision's ResNet-18 from ImageNet weights (implies --model resnet18_tv)."),
        click.option("--optimizer", default=None,
                     help=f"adam|adamw|sgd (Nesterov)|muon (filters by Muon, the rest sgd).  {FROM_RECIPE}"),
        click.option("--lr", type=float, default=None, help=f"Peak learning rate.  {FROM_RECIPE}"),
        click.option("--momentum", type=float, default=None, help=f"SGD momentum.  {FROM_RECIPE}"),
        click.option("--muon-lr", type=float, default=None,
                     help=f"muon: the filters' learning rate (a share of their norm a step).  {FROM_RECIPE}"),
        click.option("--muon-momentum", type=float, default=None, help=f"muon: the filters' momentum.  {FROM_RECIPE}"),
        click.option("--weight-decay", type=float, default=None, help=f"L2 weight decay.  {FROM_RECIPE}"),
        click.option("--batch-size", type=int, default=None,
                     help=f"Global batch size (split across torchrun processes).  {FROM_RECIPE}"),
        click.option("--epochs", type=int, default=None, help=f"Epoch cap.  {FROM_RECIPE}"),
        click.option("--time-budget", type=float, default=None,
                     help="Seconds of training steps (evaluation excluded); onecycle/cosine follow the clock  "
                          "[default: none]."),
        click.option("--schedule", default=None, help=f"none|plateau|onecycle|cosine.  {FROM_RECIPE}"),
        click.option("--warmup", type=float, default=None,
                     help=f"onecycle: share of the run spent warming up.  {FROM_RECIPE}"),
        click.option("--final-lr", type=float, default=None,
                     help=f"onecycle ends at this share of --lr (airbench94: 0.07).  {FROM_RECIPE}"),
        click.option("--lookahead/--no-lookahead", default=None,
                     help=f"airbench's lookahead: a slow copy of the weights, averaged in late training.  "
                          f"{FROM_RECIPE}"),
        click.option("--shift-params", type=click.Choice(["1-d", "batchnorm"]), default=None,
                     help=f"What --bias-lr-scale speeds up: every 1-D parameter, or BatchNorm shifts only.  "
                          f"{FROM_RECIPE}"),
        click.option("--whiten-bias-epochs", type=int, default=None,
                     help=f"fastnet's whitening bias stops learning after this many epochs.  {FROM_RECIPE}"),
        click.option("--bias-lr-scale", type=float, default=None,
                     help=f"Biases and BatchNorm shifts learn this many times faster.  {FROM_RECIPE}"),
        click.option("--label-smoothing", type=float, default=None, help=f"Cross-entropy smoothing.  {FROM_RECIPE}"),
        click.option("--augment", default=None,
                     help=f"Augmentation steps, e.g. 'crop:4,flip,rotate:15,cutout:8', 'altflip,crop:4,autoaugment' or none.  "
                          f"{FROM_RECIPE}"),
        click.option("--progressive", default=None,
                     help=f"Progressive resizing, SIZE:SHARE: train on images downscaled to SIZE x SIZE for that "
                          f"share of the run (e.g. 24:0.5), then at full size; or none.  {FROM_RECIPE}"),
        click.option("--tta/--no-tta", default=None, help=f"Average logits over the image and its mirror.  "
                                                         f"{FROM_RECIPE}"),
        click.option("--patience", type=int, default=None,
                     help="Early stopping: epochs without a better validation accuracy  [default: off]."),
        click.option("--min-delta", type=float, default=None,
                     help="Early stopping: the smallest accuracy gain that counts  [default: 0]."),
        click.option("--channels-last/--no-channels-last", default=None,
                     help=f"channels_last memory format (faster convolutions on CPU).  {FROM_RECIPE}"),
        click.option("--val-fraction", type=float, default=0.1, show_default=True,
                     help="Share of the training pool held out for validation (seeded)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for split, init and augmentation."),
        click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|mps."),
        click.option("--amp/--no-amp", default=True, show_default=True, help="bfloat16 autocast on CUDA and on CPUs with native bfloat16 (AVX512-BF16/AMX)."),
        click.option("--threads", type=int, default=0, show_default=True, help="CPU threads (0: torch's default)."),
    ]
    for option in reversed(options):
        f = option(f)
    return data_options(f)


def config_from(options: dict):
    from ..classify.recipes import recipe_config
    given = {k: options.get(k) for k in ("data", "data_root", "val_fraction", "model", "optimizer", "lr",
                                         "momentum", "muon_lr", "muon_momentum", "weight_decay", "batch_size",
                                         "epochs", "time_budget", "schedule", "warmup", "final_lr", "lookahead",
                                         "shift_params", "whiten_bias_epochs", "bias_lr_scale", "label_smoothing",
                                         "augment", "progressive", "tta", "patience", "min_delta",
                                         "channels_last", "seed", "device", "amp", "threads", "logger")}
    if options.get("model_args") is not None:
        given["model_args"] = parse_model_args(options["model_args"])
    if options.get("pretrained"):
        if given["model"] not in (None, "resnet18_tv"):
            raise CifarlabError(f"--pretrained fine-tunes resnet18_tv; it cannot be combined with "
                                f"--model {given['model']}")
        given.update(model="resnet18_tv", pretrained=True)
    config = recipe_config(options.get("recipe") or "fast", **given)
    if options.get("activation"):
        config.model_args = {**config.model_args, "activation": options["activation"]}
    return config


@classify.command("train")
@recipe_options
@click.option("--logger", type=click.Choice(LOGGERS), default="tensorboard", show_default=True)
@click.option("--out", default=None, help="Run folder  [default: runs/<timestamp>-classify-<recipe>].")
@click.option("--resume", default=None, type=click.Path(), help="Continue the run in this folder.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def train_command(ctx, **options):
    """Train a classifier; writes a run folder with model, export, metrics, figures and report.md.

    With --resume RUN_DIR the run continues with its saved settings; only --epochs,
    --time-budget, --device, --threads and --logger may be given with it.

    Under torchrun (`torchrun --nproc_per_node=N -m cifarlab classify train ...`) the processes
    share the global batch (DDP: gloo on CPU, NCCL on GPU)."""
    from ..classify import ClassifyConfig, train
    from ..classify.ddp import from_environment
    from ..runs import resumed_config
    if options["resume"]:
        changes = {k: options[k] for k in sorted(given_options(ctx) - {"resume", "quiet"})}
        config = resumed_config(options["resume"], ClassifyConfig, changes)
        run_dir = train(config, resume=options["resume"], quiet=options["quiet"])
    else:
        run_dir = train(config_from(options), out=options["out"], quiet=options["quiet"])
    if from_environment().is_main:
        click.echo(str(run_dir))


def _classifier(run_dir: str):
    from ..classify.artifact import load_run
    return load_run(run_dir)


@classify.command("eval")
@click.argument("run_dir")
@data_options
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True,
              help="Which split of --data (a folder without train/ and test/ is one pool: scored whole).")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|mps.")
@click.option("--out", default=None,
              help="Also write eval.json and eval-confusion.png into this folder (a run folder is fine: "
                   "the training's own files are never replaced)  [default: none].")
@click.option("--overwrite", is_flag=True, help="Replace eval.json and eval-confusion.png if they exist.")
def eval_command(run_dir, data, data_root, split, device, out, overwrite):
    """Score a trained run on labelled data: accuracy, per-class accuracy, confusion matrix."""
    from ..classify.data import load_labelled
    from ..classify.report import confusion_figure, score
    from ..devices import resolve_device
    from ..io import write_json

    model = _classifier(run_dir)
    outputs = [Path(out) / name for name in EVAL_FILES] if out else []
    if out and Path(out).exists() and not Path(out).is_dir():
        raise CifarlabError(f"--out {out!r} is a file: expected a folder")
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise CifarlabError(f"{', '.join(existing)} exist(s); add --overwrite to replace, or choose another --out")
    images = load_labelled(data, split, data_root)
    labels = align_labels(images.labels, images.classes, model.classes)
    dev = resolve_device(device)
    scores = score(model.to(dev), images.images, labels, model.classes, dev)
    result = {"run": str(run_dir), "data": images.name, **scores}
    if out:
        write_json(outputs[0], result)
        confusion_figure(scores["confusion"], model.classes, outputs[1], f"{images.name}: {scores['accuracy']:.1%}")
    result.pop("confusion")
    click.echo(json.dumps(result, indent=2))


EVAL_FILES = ("eval.json", "eval-confusion.png")  # never a training artifact's name


def align_labels(labels, data_classes, model_classes):
    """Map the data's class indices onto the model's, by class name."""
    if list(data_classes) == list(model_classes):
        return labels
    missing = sorted(set(data_classes) - set(model_classes))
    if missing:
        raise CifarlabError(f"the data has classes the model does not know: {', '.join(missing)} "
                            f"(model classes: {', '.join(model_classes)})")
    import torch
    mapping = torch.tensor([list(model_classes).index(c) for c in data_classes])
    return mapping[labels]


@classify.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", type=click.Choice(["pt2", "onnx"]), default="onnx", show_default=True,
              help="onnx: ONNX (checked in onnxruntime: same top-1, logits within 1e-4); pt2: torch.export.")
@click.option("--out", default=None, help="Output file [default: RUN_DIR/model.onnx or RUN_DIR/model.pt2].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file (never the run's own files).")
def export_command(run_dir, fmt, out, overwrite):
    """Write the classifier (normalisation and TTA inside) as ONNX or a torch.export program."""
    from .transform_commands import echo_export
    echo_export(run_dir, fmt, out, overwrite, "classify")


@classify.command("predict")
@click.argument("run_dir")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=int, default=3, show_default=True, help="How many classes to list per image.")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|mps.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON instead of text.")
def predict_command(run_dir, images, top_k, device, as_json):
    """Top-k classes with probabilities for each IMAGE, or every image under a folder (any size: the
    shorter side is scaled to 32 px, antialiased, then the centre 32x32 square is taken)."""
    from ..classify.predict import predict_files
    results = predict_files(_classifier(run_dir), [Path(p) for p in images], top_k, device)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for item in results:
        ranked = ", ".join(f"{name} {p:.1%}" for name, p in item["top"])
        click.echo(f"{item['image']}: {ranked}")


@classify.command("search")
@click.option("--recipe", default="fast", help=_recipe_help())
@data_options
@click.option("--grid", default=None,
              help="A preset (lr-wd: the recipe's lr x weight decay, pruned; lr-wd-full: the same points in "
                   "full; report-adam: the report's 24-point Adam grid), a grid 'lr=0.1,0.2;weight_decay=0,1e-3' "
                   "(GridSampler) or ranges 'lr=1e-3..1..log;weight_decay=0..1e-3' (TPE, with --trials)  "
                   "[default: lr-wd].")
@click.option("--pruner", type=click.Choice(["halving", "hyperband", "none"]), default=None,
              help="Multi-fidelity pruning (Optuna's successive halving or Hyperband), or none  "
                   "[default: the preset's; halving for a grid].")
@click.option("--folds", type=int, default=3, show_default=True, help="k of k-fold cross-validation.")
@click.option("--epochs", type=int, default=None, help="Epoch cap per trial and fold  [default: the preset's].")
@click.option("--time-budget", type=float, default=None,
              help="Seconds of training per trial and fold, turned into a number of steps once, when the study "
                   "is made  [default: the preset's, 30 s for lr-wd].")
@click.option("--steps", type=int, default=None,
              help="Training steps per trial and fold instead of timing --time-budget (to repeat a search "
                   "exactly, e.g. on another machine).")
@click.option("--trials", type=int, default=30, show_default=True,
              help="Trials for ranges (TPE); grids run every point.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Local worker processes; CPU threads are split among them.")
@click.option("--storage", default=None,
              help="Optuna storage shared by workers on several machines: sqlite:///search.db, "
                   "postgresql://user:pass@host/db, or a journal file path  [default: OUT/study.journal].")
@click.option("--study-name", default=None, help="Study to create or join  [default: derived from the settings].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for folds, training and the sampler.")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|mps.")
@click.option("--out", default="runs/search", show_default=True,
              help="Folder for trials.csv, heatmap.png, report.md (and the journal).")
@click.option("--quiet", is_flag=True, help="No per-trial output.")
def search_command(recipe, data, data_root, grid, pruner, folds, epochs, time_budget, steps, trials, workers,
                   storage, study_name, seed, device, out, quiet):
    """k-fold cross-validated hyperparameter search with Optuna; interrupted searches resume from the storage."""
    from ..classify.search import SearchSpec, run_search
    spec = SearchSpec(recipe=recipe, data=data, data_root=data_root, grid=grid, folds=folds, epochs=epochs,
                      time_budget=time_budget, steps=steps, trials=trials, workers=workers, storage=storage,
                      study_name=study_name, seed=seed, device=device, out=out, pruner=pruner)
    report = run_search(spec, quiet=quiet)
    click.echo(str(report))
