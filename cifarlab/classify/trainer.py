"""One epoch of classifier training, and everything it needs to resume, with the data on the device.

The whole training set lives on the training device as one uint8 tensor; each step slices a
batch, scales it to [0, 1], augments it with batched tensor ops and takes an optimizer step.
Eight batches of 128 are augmented in one call (`AUGMENT_IMAGES`): torchvision's policies cost
per op drawn more than per image (`fast`'s augmentation: 21 -> 10 ms per 128 images here, and a
`fast` epoch 4.2 -> 3.6 s).
With a time budget the learning-rate schedule follows the clock (progress = the larger of
steps done / steps planned and seconds spent / seconds allowed), so a 60 s run anneals fully
in 60 s. The budget counts training steps only; evaluation is not charged to it.

airbench94's training method is four settings (the airbench94 recipe sets them): its parameter
groups (`shift_params`), a whitening bias that stops learning after a few epochs
(`whiten_bias_epochs`), a schedule that ends above zero (`final_lr`), and `lookahead`; all of
them follow the same progress, so they work under --time-budget too.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import ImageSet, fit_to_size
from ..devices import native_bfloat16
from ..errors import CifarlabError
from ..training import EarlyStopping
from ..training.budget import require_a_whole_epoch
from ..training.schedules import lr_factor, run_progress
from ..models.classifiers import WhiteningConv
from . import ddp
from .artifact import ImageClassifier
from .augment import Augment
from .config import ClassifyConfig, parse_progressive
from .muon import FilterMuon, is_filter_bank

WHITENING_IMAGES = 5000
AUGMENT_IMAGES = 1024   # images augmented in one call (whole batches; at least one)


class TrainingDiverged(CifarlabError):
    pass


def parameter_groups(model: nn.Module, config: ClassifyConfig) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by how they learn: "shifts" learn `bias_lr_scale` times faster (every
    1-D parameter, or with airbench's split only BatchNorm shifts); "whitening bias" gets a group
    of its own when the method stops it after some epochs; "weights" is the rest."""
    groups: dict[str, list] = {"weights": [], "shifts": []}
    if config.whiten_bias_epochs is not None:
        groups["whitening bias"] = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if "whitening bias" in groups and isinstance(module, WhiteningConv) and name == "bias":
                groups["whitening bias"].append(p)
            elif (isinstance(module, nn.modules.batchnorm._BatchNorm) if config.shift_params == "batchnorm"
                  else p.ndim <= 1):
                groups["shifts"].append(p)
            else:
                groups["weights"].append(p)
    return groups


def build_optimizer(config: ClassifyConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The shifts group learns `bias_lr_scale` times faster with the same per-step weight decay
    (lr x weight decay is the same in every group, as airbench computes it)."""
    scale = config.bias_lr_scale
    groups = []
    for name, params in parameter_groups(model, config).items():
        group = dict(params=params, name=name, lr=config.lr, weight_decay=config.weight_decay)
        if name == "shifts":
            group.update(lr=config.lr * scale, weight_decay=config.weight_decay / scale)
        if name == "whitening bias":
            group["until_epoch"] = config.whiten_bias_epochs
        group["base_lr"] = group["lr"]
        groups.append(group)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "muon":
        weights = next(g for g in groups if g["name"] == "weights")
        filters = [p for p in weights["params"] if is_filter_bank(p)]
        if not filters:
            raise CifarlabError(f"--optimizer muon trains convolution filters, and model {config.model!r} has no "
                                f"convolution filters that learn: use --optimizer sgd")
        weights["params"] = [p for p in weights["params"] if not is_filter_bank(p)]
        return FilterMuon([g for g in groups if g["params"]], filters, config.muon_lr, config.muon_momentum,
                          config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.Adam(groups)


class Lookahead:
    """airbench's lookahead: a slow copy of every float tensor of the model's state (weights and
    BatchNorm statistics). Every `every` steps the slow copy moves towards the network by
    (1 - decay) and the network restarts from it; decay grows as 0.95**5 * progress**3, so
    early training runs free and late training averages. `finish` puts the slow copy in the
    network at the end of the run."""

    every = 5
    peak_decay = 0.95 ** 5

    def __init__(self, model: nn.Module):
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay(self, progress: float) -> float:
        return self.peak_decay * min(max(progress, 0.0), 1.0) ** 3

    @torch.no_grad()
    def sync(self, model: nn.Module, decay: float) -> None:
        for name, value in model.state_dict().items():
            if name in self.slow:
                self.slow[name].lerp_(value, 1 - decay)
                value.copy_(self.slow[name])

    def finish(self, model: nn.Module) -> None:
        self.sync(model, 1.0)


def lr_share(schedule: str, progress: float, warmup: float, final_lr: float) -> float:
    """The schedule's share of --lr; a onecycle with `final_lr` falls to that share instead of 0
    (airbench94: 0.2 -> 1 over the warm-up, then linearly to 0.07)."""
    factor = lr_factor(schedule, progress, warmup)
    if schedule == "onecycle" and final_lr and progress >= warmup:
        factor = final_lr + (1 - final_lr) * factor
    return factor


def init_from_data(model: ImageClassifier, images: torch.Tensor) -> None:
    """Networks with a data-dependent first layer (fastnet's whitening conv) set it up here."""
    if hasattr(model.net, "init_from_data"):
        sample = images[:WHITENING_IMAGES]
        model.net.init_from_data(model.normalize(sample.float().div(255)))


EVAL_BATCH_CPU, EVAL_BATCH = 256, 1000   # images per forward pass when scoring, on the CPU and elsewhere


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int | None = None, channels_last: bool = False, tta: bool | None = None) -> dict:
    """Cross-entropy (no smoothing), accuracy and the predictions, in eval mode. `tta`: whether the
    model's test-time augmentation is used for this call (None: as the model is set).
    On the CPU the batches are 256 images: at 1000, `fast`'s activations outgrow the caches and
    scoring is 30-36% slower (Zen 3, 1 and 2 threads, with and without TTA; BENCHMARKS.md)."""
    batch_size = batch_size or (EVAL_BATCH_CPU if torch.device(device).type == "cpu" else EVAL_BATCH)
    switch_tta = tta is not None and hasattr(model, "tta")   # models without TTA have nothing to switch
    was_training, had_tta = model.training, getattr(model, "tta", None)
    model.eval()
    if switch_tta:
        model.tta = tta
    logits = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device).float().div_(255)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits.append(model(x).float().cpu())
    finally:
        model.train(was_training)
        if switch_tta:
            model.tta = had_tta
    logits = torch.cat(logits)
    labels = labels.cpu()
    predictions = logits.argmax(1)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (predictions == labels).double().mean().item(), "predictions": predictions}


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Whole batches in an epoch (the ragged last batch is dropped; a set smaller than a batch is one)."""
    return max(1, images // min(batch_size, images))


class Trainer:
    """Holds the model, optimizer, schedule, early stopping, generators and clock of a run."""

    def __init__(self, config: ClassifyConfig, model: ImageClassifier, train_set: ImageSet,
                 device: torch.device, dist: ddp.Dist | None = None, steps: int | None = None):
        """`steps`: train exactly this many steps (a search's trials), whatever the epochs and clock say."""
        self.config, self.model, self.device = config, model, device
        self.dist = dist or ddp.Dist()
        self.images = train_set.images.to(device)                    # uint8, resident on the device
        self.labels = train_set.labels.to(device)
        self.batch_size = min(config.batch_size, len(self.images))
        self.steps_per_epoch = steps_per_epoch(len(self.images), config.batch_size)
        self.limits = config.limits()
        self.total_steps = steps or self.limits.planned_steps(self.steps_per_epoch)   # None: the clock alone
        self.optimizer = build_optimizer(config, model)
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=0.3,
                                                                    patience=2)
                        if config.schedule == "plateau" else None)
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.augment = Augment(config.augment, train_images=len(self.images), seed=config.seed)
        self.progressive = parse_progressive(config.progressive)
        self.order_generator = torch.Generator().manual_seed(config.seed)   # the same on every process
        self.augment_generator = torch.Generator(device=device).manual_seed(config.seed + 1 + self.dist.rank)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.best_accuracy = -1.0
        self._paused = None   # (the epoch's remaining batches, epoch start, sums) of an epoch stopped by pause_at
        self.cooldown = None  # (from step, from progress, steps) of a copy that runs the rest of its schedule short
        self.autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16))
                         if config.amp and native_bfloat16(device) else contextlib.nullcontext)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.lookahead = Lookahead(model) if config.lookahead else None
        self.net = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    @property
    def out_of_time(self) -> bool:
        return self.config.time_budget is not None and self.elapsed >= self.config.time_budget

    def progress(self) -> float:
        if self.cooldown is not None:
            start, start_progress, steps = self.cooldown
            return start_progress + (1 - start_progress) * min(1.0, (self.step - start) / steps)
        return run_progress(self.step, self.total_steps, self.elapsed, self.config.time_budget)

    def learns(self, group: dict) -> bool:
        """Whether a parameter group still learns this epoch (the whitening bias stops after its epochs)."""
        return self.epoch < group.get("until_epoch", math.inf)

    def set_lr(self) -> float:
        factor = lr_share(self.config.schedule, self.progress(), self.config.warmup, self.config.final_lr)
        for group in self.optimizer.param_groups:
            learning = self.learns(group)   # a group that stopped learning: lr 0
            if self.plateau is None or not learning:
                group["lr"] = group["base_lr"] * factor if learning else 0.0
        return self.optimizer.param_groups[0]["lr"]

    @property
    def run_is_over(self) -> bool:
        if self.cooldown is not None:
            return self.step >= self.cooldown[0] + self.cooldown[2]
        return self.out_of_time or (self.total_steps is not None and self.step >= self.total_steps)

    def cooled_copy(self, steps: int) -> ImageClassifier:
        """A copy of the network that ran the rest of this run's schedule in `steps` more steps
        (the lr annealed, the full image size, the lookahead finished); the run itself is untouched.
        A search looks at its trials this way: mid-schedule a large lr is still noisy and `fast`
        still trains on 24 px images, so a plain look ranks small learning rates first, the reverse
        of how the runs end (docs/search-measurement.md)."""
        def clone(generator: torch.Generator) -> torch.Generator:
            twin = torch.Generator(device=generator.device)
            twin.set_state(generator.get_state())
            return twin
        shared = {id(self.images): self.images, id(self.labels): self.labels,
                  id(self.order_generator): clone(self.order_generator),
                  id(self.augment_generator): clone(self.augment_generator)}
        paused, self._paused = self._paused, None   # a Python generator cannot be copied
        try:
            branch = copy.deepcopy(self, memo=shared)
        finally:
            self._paused = paused
        branch.cooldown = (self.step, self.progress(), max(1, steps))
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):   # MixUp / CutMix draw from the global RNG: the run's stays
            while not branch.run_is_over:
                branch.train_epoch()
        return branch.model

    def look_ahead(self) -> None:
        """After each step: the lookahead sync every `Lookahead.every` steps, the final copy at the end."""
        if self.lookahead is None:
            return
        if self.step % Lookahead.every == 0:
            self.lookahead.sync(self.model, self.lookahead.decay(self.progress()))
        if self.run_is_over:
            self.lookahead.finish(self.model)

    def stop_finished_groups(self) -> None:
        """A group whose epochs are over (the whitening bias after `whiten_bias_epochs`) stops
        taking gradients, as airbench detaches it: nothing before the first convolution then needs
        one, which saves that convolution's input gradient (~5-9% of a `fast` step on the Zen 3).
        Under DDP the group keeps its gradient at lr 0: DDP expects the parameters it started with."""
        if self.dist.enabled:
            return
        for group in self.optimizer.param_groups:
            if "until_epoch" in group:
                for p in group["params"]:
                    p.requires_grad_(self.learns(group))

    def train_epoch(self, progress_bar=None, pause_at: int | None = None) -> dict | None:
        """One pass over the (shuffled) training set, or up to the time budget. With `pause_at` it
        stops after that step (None back) and the next call goes on from there in the same order:
        a paused run trains exactly as one that never paused (a search looks at trials part-way)."""
        self.net.train()
        self.stop_finished_groups()
        if self._paused is None:
            order = torch.randperm(len(self.images), generator=self.order_generator).to(self.device)
            batches, epoch_start, (loss_sum, correct, seen, steps) = self.batches(order), self.elapsed, (0.0, 0, 0, 0)
        else:
            batches, epoch_start, (loss_sum, correct, seen, steps) = self._paused
            self._paused = None
        started, before = time.perf_counter(), self.elapsed
        for i, x, y in batches:
            lr = self.set_lr()
            x, target = self.augment.mix(x, y, len(self.model.classes))
            x = self.resized(x)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits = self.net(x)
            loss = self.loss_fn(logits.float(), target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            steps += 1
            value = loss.item()
            self.elapsed, diverged, interrupted = ddp.max_across(
                [before + time.perf_counter() - started, 0.0 if math.isfinite(value) else 1.0,
                 float(self.dist.interrupted)], self.dist, self.device)
            if diverged:
                where = value if not math.isfinite(value) else "non-finite on another process"
                raise TrainingDiverged(f"the training loss became {where} at epoch {self.epoch + 1}: lower --lr "
                                       f"(the best checkpoint so far is intact)")
            if interrupted:  # Ctrl-C on any process, seen by all at this same step
                raise KeyboardInterrupt
            self.look_ahead()
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if progress_bar is not None:
                progress_bar.update(1)
                progress_bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}")
            if self.run_is_over:
                break
            if pause_at is not None and self.step >= pause_at and i + 1 < self.steps_per_epoch:
                self._paused = (batches, epoch_start, (loss_sum, correct, seen, steps))
                return None
        if self.epoch == 0 and self.out_of_time:
            require_a_whole_epoch(steps, self.steps_per_epoch, self.elapsed - epoch_start, self.config.time_budget)
        self.epoch += 1
        seconds = self.elapsed - epoch_start
        row = {"epoch": self.epoch, "train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
               "lr": self.optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
               "time": self.elapsed, "images_per_second": seen * self.dist.world / max(1e-9, seconds)}
        self.history.append(row)
        return row

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        """Progressive resizing (`--progressive SIZE:SHARE`): smaller images while the run's progress
        is below SHARE, so early steps cost less and the budget holds more epochs; the full size
        after, so the network ends on the images it will be given."""
        if self.progressive is None or self.progress() >= self.progressive[1]:
            return images
        return fit_to_size(images, self.progressive[0])

    def batches(self, order: torch.Tensor):
        """The epoch's batches in `order` as (step, augmented images, labels). `AUGMENT_IMAGES`
        worth of whole batches are augmented in one call, each process's shard of each batch
        (ddp.shard) as it would be alone; a run that ends mid-epoch wastes at most one call."""
        per_call = max(1, AUGMENT_IMAGES // self.batch_size)
        for first in range(0, self.steps_per_epoch, per_call):
            steps = range(first, min(first + per_call, self.steps_per_epoch))
            parts = [ddp.shard(order[i * self.batch_size:(i + 1) * self.batch_size], self.dist) for i in steps]
            index = torch.cat(parts)
            images = self.augment(self.images[index].float().div_(255), self.augment_generator, index=index,
                                  epoch=self.epoch)
            yield from zip(steps, images.split([len(part) for part in parts]), (self.labels[p] for p in parts))

    def validate(self, val_set: ImageSet) -> dict:
        """Rank 0 scores the validation set, without test-time augmentation; every process gets its
        numbers and acts on them alike. Why no TTA, as airbench: its six views made each epoch's
        check cost six passes, about 60 s of a 240 s `fast` run's 340 s of wall time, and only the
        final score (report.py) needs them: the check only ranks the epochs against each other."""
        scores = [0.0, 0.0]
        if self.dist.is_main:
            result = evaluate(self.model, val_set.images, val_set.labels, self.device,
                              channels_last=self.config.channels_last, tta=False)
            scores = [result["loss"], result["accuracy"]]
        val_loss, val_accuracy = ddp.from_main(scores, self.dist, self.device)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"the validation loss became {val_loss} at epoch {self.epoch}: lower --lr "
                                   f"(the best checkpoint so far is intact)")
        improved = self.stopper.step(-val_accuracy)
        if improved:
            self.best_accuracy = val_accuracy
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.plateau is not None:
            self.plateau.step(val_accuracy)
        row = {"val_loss": val_loss, "val_accuracy": val_accuracy, "improved": improved}
        self.history[-1].update(row)
        return row

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau is not None else None,
                "stopper": self.stopper.state_dict(), "history": self.history, "epoch": self.epoch,
                "step": self.step, "elapsed": self.elapsed, "best_accuracy": self.best_accuracy,
                "order_generator": self.order_generator.get_state(),
                "augment_generator": self.augment_generator.get_state().cpu(),
                "lookahead": self.lookahead.slow if self.lookahead is not None else None}

    def load_state_dict(self, state: dict, best_state: dict | None) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self.stopper.load_state_dict(state["stopper"])
        self.history, self.epoch, self.step = state["history"], state["epoch"], state["step"]
        self.elapsed, self.best_accuracy = state["elapsed"], state["best_accuracy"]
        self.order_generator.set_state(state["order_generator"])
        if self.dist.world == 1:  # with several processes each has its own stream; a fresh one is fine
            self.augment_generator.set_state(state["augment_generator"])
        if self.lookahead is not None and state.get("lookahead"):
            for name, value in state["lookahead"].items():
                self.lookahead.slow[name].copy_(value)
        self.best_state = best_state
