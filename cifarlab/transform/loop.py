"""Train a network to reproduce an image pipeline; the loop is deliberately plain.

    cifarlab transform train --data ../shared/data/cifar10-train-subset --time-budget 60

Every run writes one folder: config.json, model.pt (best weights), last.pt (for --resume),
model.pt2 (torch.export), metrics.json, samples.png, loss.png, report.md, tensorboard/.
Ctrl-C saves the best model and the state to resume from; a NaN/inf loss stops the run
with the best checkpoint intact.
"""
from __future__ import annotations

import copy
import itertools
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
import torchvision
import torchvision.transforms.v2.functional  # noqa: F401
from tqdm import tqdm

from ..devices import resolve_device
from ..errors import CifarlabError
from ..io import torch_save, write_json
from ..runs import RunFolder, config_to_resume
from ..models import create_model
from ..models.exact import (EXACT_TOL, LinearPlan, SpatialPlan, linear_plan, operator_fits,
                            spatial_front_plan, spatial_plan)
from ..models.separable import FRONT_STAGES, spatial_prefix
from ..pipeline import Pipeline
from ..training import EarlyStopping, RunLogger, build_loss
from ..training.budget import require_a_whole_epoch
from ..training.schedules import lr_factor, run_progress
from .artifact import checkpoint, read_checkpoint
from ..checkpoints import read_training_state, save_checkpoint
from .config import TransformConfig
from .data import TransformData, prepare_data
from .finish import finish_run


# Validation MSE at which a run stops even under a budget: outputs in [0, 1] agree with the
# ground truth to float32 rounding (PSNR 140 dB); more training cannot show.
FLOAT32_FLOOR = 1e-14


class TrainingDiverged(CifarlabError):
    pass


def exact_front(config: TransformConfig, pipeline: Pipeline, in_shape) -> tuple[dict, Pipeline, dict]:
    """What sepnet does exactly in front of everything it learns. From the pipeline's start, step
    after step, the first of these (in `FRONT_STAGES`' order) that fits the steps still left, each at
    most once, unless --model-args turns it off (front, stretch, curve, affine, color = false):
    - spatial: leading steps that move pixels before a non-linear step, or a sharpness (a spatial
      operator, then the clamp), or both (`front_rank` or `front_dense`; probed);
    - stretch: an autocontrast;
    - curve: steps that act on each channel's values alone (gamma, solarize...; a probed table);
    - affine: steps of the form clamp(A·x + B·mean(x) + b) (brightness, contrast, saturation, with the
      linear per-pixel steps before them; fitted);
    - spatial2, affine2, curve2: a second spatial front, blend or curve, for chains that need one more;
    - color: steps that map each pixel's colour alone (hue; a table over a lattice of colours, not
      exact: `COLOR_NODES`), tried last.
    Curves, blends and colour tables are probed on values in [0, 1]: after a front whose output leaves
    that range (normalize), they are not used.
    Stops when the rest is linear (the operator then holds it exactly) or nothing fits. Returns the
    model kwargs it sets (with `fronts`, their order), the rest of the pipeline (what the network's
    other parts must do) and the buffers to load."""
    args, front, tables, order = config.model_args, {}, {}, []
    if config.model != "sepnet":
        return front, pipeline, tables
    in_range = True   # whether the next front's input lies in [0, 1], as the data's does
    shape = tuple(in_shape)   # the next front's input: a spatial front may resize, crop or pad
    while len(order) < len(FRONT_STAGES) and not pipeline.is_linear(shape):
        for stage in FRONT_STAGES:
            switch = stage.rstrip("2").replace("spatial", "front")
            if stage in order or (stage.endswith("2") and stage[:-1] not in order) or not args.get(switch, True):
                continue
            found = _front_stage(stage, pipeline, shape, in_range)
            if found is not None:
                kwargs, stage_tables, steps, in_range = found
                front.update(kwargs)
                tables.update(stage_tables)
                order.append(stage)
                moved = Pipeline(pipeline.steps[:steps]).output_shape(shape)
                if moved[1:] != shape[1:]:   # a spatial front that resizes, crops or pads
                    front[f"{spatial_prefix(stage)}_height"], front[f"{spatial_prefix(stage)}_width"] = moved[1:]
                shape, pipeline = moved, pipeline.after(steps)
                break
        else:
            break
    if order:
        front["fronts"] = ",".join(order)
    return front, pipeline, tables


def rest_shape(front_kwargs: dict, in_shape) -> tuple[int, int, int]:
    """The shape the network's learned part sees: the input's, or what the spatial fronts hand on."""
    size = [front_kwargs.get(f"front2_{side}") or front_kwargs.get(f"front_{side}") or in_shape[i]
            for i, side in ((1, "height"), (2, "width"))]
    return (in_shape[0], *size)


def _front_stage(stage: str, pipeline: Pipeline, in_shape, in_range: bool):
    """(model kwargs, buffers, steps taken, output in [0, 1]) when `stage` fits the pipeline's start."""
    if stage in ("spatial", "spatial2"):
        found = spatial_front_plan(pipeline, in_shape)
        if found is None:
            return None
        plan, steps, clamp = found
        prefix = spatial_prefix(stage)
        if plan.rank is None:
            kwargs, tables = {f"{prefix}_dense": True}, {f"{prefix}_dense": plan.operator.float()}
        else:
            kwargs = {f"{prefix}_rank": plan.rank}
            tables = {f"{prefix}_left": plan.left.float(), f"{prefix}_right": plan.right.float()}
        # a linear front keeps values in [0, 1] when it averages pixels (no negative weight, rows sum to 1 at most)
        averages = bool((plan.operator >= 0).all() and (plan.operator.sum(1) <= 1 + 1e-9).all())
        return {**kwargs, f"{prefix}_clamp": clamp}, tables, steps, clamp or (in_range and averages)
    if stage == "stretch":
        return ({"stretch": True}, {}, 1, True) if pipeline.leading_stretch else None
    if not in_range:
        return None   # the tables and fits below hold for inputs in [0, 1], as they were probed
    if stage in ("curve", "curve2"):
        table, steps = pipeline.leading_curve(in_shape)
        if table is None:
            return None
        return ({stage: True, "levels" + stage[5:]: table.shape[1]}, {stage: table}, steps,
                bool(table.min() >= 0 and table.max() <= 1))
    if stage in ("affine", "affine2"):
        table, steps = pipeline.leading_clamped_affine_run(in_shape)
        return None if table is None else ({stage: True}, {stage: table}, steps, True)
    table, steps = pipeline.leading_color_map(in_shape)
    if table is None:
        return None
    return ({"color": True, "color_nodes": table.shape[-1]}, {"color_table": table}, steps,
            bool(table.min() >= 0 and table.max() <= 1))


def model_kwargs_for(config: TransformConfig, pipeline: Pipeline, in_shape, plan=None, front=None) -> dict:
    """The default model's shape follows the pipeline unless --model-args says otherwise:
    linear pipelines get the purely linear network, quarter turns the transposed one, a leading
    autocontrast the exact stretch, leading per-value steps the exact curve (`exact_front`), and
    the probed operator (`operator_plan`) sets the rank, or a dense spatial operator. `front`:
    `exact_front`'s answer, when the caller has it (it probes the pipeline)."""
    kwargs = dict(config.model_args)
    if config.model == "sepnet":
        kwargs.pop("front", None)   # a switch of `exact_front`'s, not an option of the net
        front_kwargs, pipeline, _ = front or exact_front(config, pipeline, in_shape)
        in_shape = rest_shape(front_kwargs, in_shape)
        for key, value in front_kwargs.items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("hidden", 0 if pipeline.is_linear(in_shape) else 16)
        spatial = plan.spatial if isinstance(plan, LinearPlan) else plan
        if spatial is not None and not kwargs.get("dense"):
            for key, value in spatial.model_kwargs().items():
                kwargs.setdefault(key, value)
        kwargs.setdefault("transpose", pipeline.transposes)
        if kwargs["hidden"]:
            # ReLU, recorded in the checkpoint: on two non-linear pipelines it reached 2.9-3.2 dB more than GELU
            # in 90 s (BENCHMARKS.md), at ~30% less time a step. SeparableNet's own default stays GELU,
            # which is what checkpoints without an `act` entry were trained with.
            kwargs.setdefault("act", "relu")
            # Image-wide max/min features only where a step needs them: +7 dB in 90 s on an autocontrast
            # pipeline, but ~1.7x slower epochs, which cost 1.8 dB in 90 s on one without.
            kwargs.setdefault("context", "range" if pipeline.uses_extremes else "mean")
    return kwargs


def operator_plan(config: TransformConfig, pipeline: Pipeline, in_shape,
                  out_shape, front=None) -> LinearPlan | SpatialPlan | None:
    """What probing the pipeline says about the sepnet it needs: for a linear pipeline its whole
    operator (channels ⊗ space), otherwise the operator of its spatial steps; None for other
    models or operators too big to probe. Refuses, before any training, what sepnet cannot hold."""
    if config.model != "sepnet" or not operator_fits(in_shape, out_shape):
        return None
    rank = config.model_args.get("rank")
    rank = rank if isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= 64 else None
    front_kwargs, pipeline, _ = front or exact_front(config, pipeline, in_shape)   # done exactly; the rest is planned
    in_shape = rest_shape(front_kwargs, in_shape)
    if pipeline.is_linear(in_shape):
        plan = linear_plan(pipeline, in_shape, rank)
        if plan.error > EXACT_TOL:
            raise CifarlabError(
                f"pipeline {pipeline.spec!r} is linear but sepnet cannot hold it (off by {plan.error:.1e}): it adds "
                f"a bias that varies across the image, e.g. normalize before rotate or pad fills the border "
                f"with 0, not with the shifted value; put normalize after the steps that move pixels, or use "
                f"another --model")
        spatial = plan.spatial
    else:
        plan = spatial = spatial_plan(pipeline, in_shape, rank)
    if rank is not None and spatial is not None and not spatial.exact and not config.model_args.get("dense"):
        raise CifarlabError(
            f"--model-args rank={rank} cannot hold {pipeline.spec!r}: its spatial operator {spatial.needs()} to reach "
            f"float precision (rank {rank} is off by {spatial.error:.1e} relative); drop rank from --model-args "
            f"and the trainer picks the form (dense where that is less work), or give dense=true")
    return plan


# Learning rate of a spatial operator that starts from the probe, as a share of --lr: Adam moves
# every weight by about the rate at first, which would blur the probed operator away.
SPATIAL_LR_SCALE = 0.01
# Learning rate of the colour table (`exact_front`), as a share of --lr: its interpolation error is
# ~1e-3, which Adam's first steps at the full rate would swamp.
COLOR_LR_SCALE = 0.01


def build_net(config: TransformConfig, data: TransformData) -> tuple[torch.nn.Module, dict, str, list[str]]:
    """The network, its kwargs, where it starts ("operator": the pipeline's exact operator;
    "color": that too, but for a colour table, which alone trains, the rest frozen; "spatial": the
    probed operator of spatial steps that need more than rank 1; "random") and notes for the run's
    output (an operator the network can only approximate)."""
    front = exact_front(config, data.pipeline, data.in_shape)   # probes the pipeline: once
    plan = operator_plan(config, data.pipeline, data.in_shape, data.out_shape, front)
    kwargs = model_kwargs_for(config, data.pipeline, data.in_shape, plan, front)
    notes = []
    if kwargs.get("color"):
        nodes = kwargs.get("color_nodes", 65)
        notes.append(f"a table over {nodes}³ colours does what the pipeline does to each pixel's colour, "
                     f"interpolated between them (adjust_hue:0.1 then the default pipeline: 63 dB on "
                     f"CIFAR-10 as probed); training refines it on the data")
    spatial = plan.spatial if isinstance(plan, LinearPlan) else plan
    if spatial is not None and not spatial.exact and not kwargs.get("dense"):
        notes.append(spatial.describe())
    init = config.init
    if init == "exact" and not isinstance(plan, LinearPlan):
        raise CifarlabError("--init exact needs --model sepnet on a linear pipeline (hidden=0) whose operator "
                            "can be probed (outputs up to 64x64)")
    if init == "exact" and kwargs.get("hidden"):
        raise CifarlabError("--init exact needs the purely linear sepnet (hidden=0 in --model-args)")
    net = create_model(config.model, in_shape=data.in_shape, out_shape=data.out_shape, **kwargs)
    with torch.no_grad():
        for name, table in front[2].items():
            if getattr(net, name, None) is not None:
                getattr(net, name).copy_(table)
    if init in ("auto", "exact") and isinstance(plan, LinearPlan) and not kwargs.get("hidden"):
        plan.load(net)  # short of float precision (a capped rank), training goes on from there
        exact = plan.spatial.exact or kwargs.get("dense")
        if exact and kwargs.get("color"):   # all exact but the colour table: it alone is refined on the data
            for name, weight in net.named_parameters():
                weight.requires_grad_(name == "color_table")
            return net, kwargs, "color", notes
        return net, kwargs, "operator" if exact else "spatial", notes
    if init == "auto" and spatial is not None and spatial.rank != 1:
        # Where rank 1 holds the spatial steps, random weights find them: on the gamma/contrast pipeline
        # they reached 43.4 dB in 60 s, and 39.1 dB from the probe. Beyond rank 1 they do not: on
        # gamma + rotate:30, 15.6 dB at rank 1, 33.4 dB dense and random, 47.1 dB dense from the probe.
        spatial.load_spatial(net)
        return net, kwargs, "spatial", notes
    return net, kwargs, "random", notes


def _param_groups(net, start: str, lr: float) -> list[dict]:
    """The weights that train (`build_net` freezes the rest), with the spatial operator's own group
    where it starts from the probe (SPATIAL_LR_SCALE) and the colour table's (COLOR_LR_SCALE)."""
    spatial_names = ("spatial", "left", "right") if start == "spatial" else ()
    trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    table = [p for n, p in trained if n == "color_table"]
    spatial = [p for n, p in trained if n in spatial_names]
    rest = [p for n, p in trained if n not in spatial_names and n != "color_table"]
    groups = [{"params": rest, "lr": lr, "scale": 1.0}] if rest else []
    if spatial:
        groups.append({"params": spatial, "lr": lr * SPATIAL_LR_SCALE, "scale": SPATIAL_LR_SCALE})
    if table:
        groups.append({"params": table, "lr": lr * COLOR_LR_SCALE, "scale": COLOR_LR_SCALE})
    return groups


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{model}"


def _make_scheduler(config: TransformConfig, optimizer):
    """Plateau only: cosine is set step by step in the loop, following the clock under --time-budget."""
    if config.resolved_schedule() == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=2)
    return None


@torch.no_grad()
def mean_loss(net, loss_fn, inputs, targets, device, batch_size=1024) -> float:
    net.eval()
    total = 0.0
    for i in range(0, len(inputs), batch_size):
        x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)
        total += loss_fn(net(x), y).item() * len(x)
    return total / max(1, len(inputs))


def _log_samples(logger, net, best_state, x_val, y_val, device, step, count=8) -> None:
    """Input / ground truth / output rows of the first held-out images, for TensorBoard."""
    import torchvision.utils as vutils
    net.load_state_dict(best_state)
    with torch.no_grad():
        out = net.eval()(x_val[:count].to(device)).cpu().clamp(0, 1)
    size = list(y_val.shape[-2:])
    rows = [torchvision.transforms.v2.functional.resize(x_val[:count], size, antialias=True), y_val[:count], out]
    rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r[:, :3] for r in rows]
    logger.images("samples/input-truth-model", vutils.make_grid(torch.cat(rows), nrow=count), step)


LAST_STATE_KEYS = ("model", "optimizer", "stopper", "history", "epoch", "elapsed", "generator")


def train(config: TransformConfig | None, out: str | None = None, resume: str | None = None,
          quiet: bool = False) -> Path:
    """Train (or resume) a run; returns its folder. See the module docstring.

    With `resume` the run continues with its saved config; `config` may be None, or the
    saved config with new RESUMABLE settings (limits, device, threads)."""
    if resume:
        config = config_to_resume(resume, TransformConfig, config)
    elif config is None:
        raise CifarlabError("train() needs a TransformConfig (or resume=RUN_DIR)")
    config.validate()
    device = resolve_device(config.device)
    folder = RunFolder.open(resume, "resume") if resume else RunFolder.create(out or default_run_dir(config.model))
    with folder:
        try:
            return _train(config, folder.path, bool(resume), device, quiet)
        except BaseException:
            if not resume and not (folder.path / "model.pt").exists():
                folder.abandon()  # nothing worth keeping: the same --out can be used again
            raise


def _train(config, run_dir, resuming, device, quiet) -> Path:
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    pipeline = Pipeline.parse(config.pipeline)
    loss_fn = build_loss(config.loss).to(device)
    data = prepare_data(config.data, pipeline, config.data_root, config.val_fraction, config.seed)
    net, model_kwargs, start, notes = build_net(config, data)
    at_operator = start == "operator"
    net.to(device)

    optimizer = torch.optim.Adam(_param_groups(net, start, config.lr), lr=config.lr)
    scheduler = _make_scheduler(config, optimizer)
    limits, patience = config.limits(), config.early_stopping_patience()
    stopper = EarlyStopping(patience, config.min_delta)
    history: list[dict] = []
    start_epoch, elapsed, best_state = 0, 0.0, None
    generator = torch.Generator().manual_seed(config.seed)
    if resuming:
        state = read_training_state(run_dir / "last.pt", LAST_STATE_KEYS, "cifarlab transform train")
        try:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["stopper"])
            history, start_epoch, elapsed = list(state["history"]), int(state["epoch"]) + 1, float(state["elapsed"])
            generator.set_state(state["generator"])
        except Exception as e:
            raise CifarlabError(f"cannot resume {str(run_dir)!r}: last.pt is damaged or belongs to another "
                                f"model ({type(e).__name__})") from None
        best_state = read_checkpoint(run_dir / "model.pt")["state_dict"] if (run_dir / "model.pt").exists() else None
    config_dict = config.to_dict() | {"torch": torch.__version__, "torchvision": torchvision.__version__}
    write_json(run_dir / "config.json", config_dict)  # from_dict skips the version keys on --resume

    x_train, y_train = (t.to(device) for t in data.split("train"))
    x_val, y_val = data.split("val")
    logger = RunLogger(config.logger, run_dir, config_dict)
    ckpt_info = dict(model_name=config.model, model_kwargs=model_kwargs, in_shape=data.in_shape,
                     out_shape=data.out_shape, pipeline=pipeline.spec, config=config.to_dict())
    if not quiet:
        n_params = sum(p.numel() for p in net.parameters())
        print(f"cifarlab: {config.model} ({n_params:,} parameters) learns {pipeline.spec!r} on "
              f"{data.images.name} ({len(x_train)} train / {len(x_val)} held-out images), device {device}; "
              f"{limits.describe()}" + (f", early stopping after {patience} epochs without improvement"
                                        if patience else ""), file=sys.stderr)
        for note in notes:
            print(f"cifarlab: note: {note}", file=sys.stderr)

    def save_state(epoch: int) -> None:
        torch_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "stopper": stopper.state_dict(), "history": history, "epoch": epoch,
                    "elapsed": elapsed, "generator": generator.get_state()}, run_dir / "last.pt")

    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    schedule = config.resolved_schedule()
    if start in ("operator", "color") and not resuming:
        # The network holds the probed operator to float precision: Adam's steps can only add noise,
        # so the run is scored as it stands (epoch 0) and ends there; or all but its colour table,
        # which is interpolated: scored as it stands first, so training can only keep it or improve it.
        row = {"epoch": 0, "train_loss": mean_loss(net, loss_fn, x_train, y_train, device),
               "val_loss": mean_loss(net, loss_fn, x_val, y_val, device), "lr": config.lr, "time": 0.0}
        history.append(row)
        monitored = row["val_loss"] if config.monitor == "val" else row["train_loss"]
        stopper.step(monitored)
        best_state = copy.deepcopy(net.state_dict())
        save_checkpoint(run_dir / "model.pt", checkpoint(net=net, epoch=0, best_loss=monitored, **ckpt_info))
        save_state(-1)
        if not quiet:
            what = "the probed operator" + (" and colour table" if start == "color" else "")
            print(f"epoch    0  train {row['train_loss']:.3e}  val {row['val_loss']:.3e}* ({what})", file=sys.stderr)
    stop_reason, epoch = "epochs", start_epoch - 1
    started = time.perf_counter() - elapsed
    out_of_time = config.time_budget is not None and elapsed >= config.time_budget
    try:
        for epoch in itertools.count(start_epoch):
            if at_operator:
                stop_reason = "the exact operator (probed before training: more training only adds noise)"
                break
            if out_of_time:
                stop_reason = "time budget"
                break
            if not limits.epochs_left(epoch):
                stop_reason = "epochs"
                break
            net.train()
            order = torch.randperm(len(x_train), generator=generator).to(device)
            total, seen, steps = 0.0, 0, 0
            bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{limits.epochs or '-'}",
                       leave=False, disable=quiet or None, unit="batch")
            for i in bar:
                if schedule == "cosine":
                    done = run_progress(epoch * steps_per_epoch + i // config.batch_size,
                                        limits.planned_steps(steps_per_epoch), time.perf_counter() - started,
                                        config.time_budget)
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * group.get("scale", 1.0) * lr_factor("cosine", done)
                batch = order[i:i + config.batch_size]
                loss = loss_fn(net(x_train[batch]), y_train[batch])
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"the training loss became {value} at epoch {epoch + 1}: "
                                           f"lower --lr; the best checkpoint in {run_dir} is intact")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, seen, steps = total + value * len(batch), seen + len(batch), steps + 1
                bar.set_postfix(loss=f"{value:.3e}")
                if config.time_budget is not None and time.perf_counter() - started >= config.time_budget:
                    out_of_time = True
                    break
            bar.close()
            elapsed = time.perf_counter() - started
            if epoch == 0 and out_of_time and best_state is None:   # a colour table's run saved its probe
                require_a_whole_epoch(steps, steps_per_epoch, elapsed, config.time_budget)
            row = {"epoch": epoch + 1, "train_loss": total / max(1, seen),
                   "val_loss": mean_loss(net, loss_fn, x_val, y_val, device),
                   "lr": optimizer.param_groups[0]["lr"], "time": elapsed}
            history.append(row)
            if not math.isfinite(row["val_loss"]):
                raise TrainingDiverged(f"the validation loss became {row['val_loss']} at epoch {epoch + 1}: "
                                       f"lower --lr; the best checkpoint in {run_dir} is intact")
            monitored = row["val_loss"] if config.monitor == "val" else row["train_loss"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(monitored)
            elif scheduler is not None:
                scheduler.step()
            if stopper.step(monitored):
                best_state = copy.deepcopy(net.state_dict())
                save_checkpoint(run_dir / "model.pt", checkpoint(net=net, epoch=epoch + 1,
                                                                 best_loss=monitored, **ckpt_info))
            save_state(epoch)
            logger.scalars({"loss/train": row["train_loss"], "loss/val": row["val_loss"], "lr": row["lr"]}, epoch + 1)
            if not quiet:
                mark = "*" if stopper.bad_epochs == 0 else " "
                print(f"epoch {epoch + 1:4d}  train {row['train_loss']:.3e}  val {row['val_loss']:.3e}{mark} "
                      f"{elapsed:7.1f}s", file=sys.stderr)
            if stopper.should_stop:
                stop_reason = f"early stopping (no {config.monitor} improvement for {patience} epochs)"
                break
            if config.loss == "mse" and row["val_loss"] <= FLOAT32_FLOOR:
                stop_reason = f"the float32 floor (validation MSE {row['val_loss']:.1e})"
                break
        if out_of_time:
            stop_reason = "time budget"
    except KeyboardInterrupt:
        elapsed = time.perf_counter() - started
        save_state(max(epoch - 1, start_epoch - 1))
        stop_reason = "interrupted"
        print(f"\ninterrupted: the best model so far is saved; resume with "
              f"'cifarlab transform train --resume {run_dir}'", file=sys.stderr)
    finally:
        if best_state is not None:
            _log_samples(logger, net, best_state, x_val, y_val, device, len(history))
        logger.close()

    if best_state is None:
        if stop_reason == "interrupted":   # Ctrl-C or SIGTERM stays an interruption: a survey or a
            raise KeyboardInterrupt         # search must stop too, not record a failed run and go on
        raise CifarlabError("training stopped before the first epoch finished: nothing was saved "
                            "(raise --time-budget)")
    net.load_state_dict(best_state)
    finish_run(run_dir, net, data, config, history, stop_reason, elapsed, device, quiet=quiet)
    if stop_reason == "interrupted":
        raise KeyboardInterrupt
    return run_dir
