"""k-fold cross-validated hyperparameter search on Optuna, with successive halving.

    cifarlab classify search --data DATA --folds 3 --workers 2                  # preset lr-wd: pruned
    cifarlab classify search --data DATA --grid lr-wd-full                      # the same points, every one in full
    cifarlab classify search --data DATA --grid report-adam                     # the report's 24-point Adam grid
    cifarlab classify search --grid "lr=0.1,0.2,0.4;label_smoothing=0,0.2"     # any grid (GridSampler)
    cifarlab classify search --grid "lr=1e-3..1..log;weight_decay=0..1e-3" --trials 40   # ranges (TPE)

A grid is ``name=v1,v2,...`` parts joined by ``;``; a part with one value fixes that setting.
Ranges are ``low..high`` (``..log`` after them for a log scale). In values of ``augment`` write
``+`` for the spec's commas: ``augment=crop:2+flip,none``. ``--grid`` also takes a preset name
(PRESETS). The default preset searches the recipe's own learning rate x weight decay, x1/4 to x2.

Every trial trains the recipe as the recipe trains (its optimizer, its schedule) for a fixed
number of steps per fold: --time-budget seconds (default 30), timed once on this machine when the
study is made and stored with it, or --steps; --epochs caps it. Fixed steps, not the clock: settings
are compared on equal training, and a point scores the same in every run and on every worker.
Why rungs: most settings of a grid are visibly worse long before the full budget, so a pruned
search looks at fold 1's run a third of the way through, and again at its end, then trains the
other folds. The first look scores a copy of the run that finished the schedule in as many steps
again (lr annealed, full image size, lookahead applied; scored without TTA) and the run goes on
unchanged: scored as it stands, mid-schedule, a run with a large lr is still noisy and ranks low
although it ends best (docs/search-measurement.md). At each look Optuna's
pruner (successive halving or Hyperband) asks whether the setting is still in the top third of
those that reached that look. Intermediate values are reported at steps counted in ninths of
one fold's budget: 3 (a third of fold 1), 9 (fold 1 in full), 9k (k folds in full, their mean).
The trial's value is the mean accuracy over all folds. The recipe's own setting, when the space
holds it, is the first trial (`recipe_point`).

Workers are processes that share one Optuna study through its storage: a journal file in OUT
by default, or ``--storage`` (``sqlite:///search.db``; ``postgresql://user:pw@host/db`` to join
workers on several machines). A worker that dies leaves its trial RUNNING: with a database the
others see its heartbeat stop and run the setting again (RetryFailedTrialCallback); with the
journal the others see its process gone (same machine). Running the same command resumes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..devices import resolve_device
from ..errors import CifarlabError
from ..training.budget import BudgetEndedInFirstEpoch
from .config import ClassifyConfig

REPORT_GRID = "optimizer=adam;lr=0.001,0.002,0.0015,0.003;weight_decay=0,0.001,0.002,0.003,0.005,0.01"
DEFAULT_TIME_BUDGET = 30.0          # seconds of training per trial and fold
RUNGS = (1 / 3,)                    # shares of fold 1's run at which it is looked at (a 1/9 look ranks noise)
REDUCTION = 3                       # each rung keeps the top third
FIRST_RUNG = round(RUNGS[0] * 9)    # the pruners' first rung: the first look's step (ninths of a fold)
PRUNERS = ("halving", "hyperband", "none")
HEARTBEAT_ENV = "CIFARLAB_SEARCH_HEARTBEAT"   # "INTERVAL[,GRACE]" seconds for database storages
HOST = socket.gethostname()
POLL = 2.0                          # seconds between looks at trials other workers are running
WARM_UP, CALIBRATION = 1.0, 4.0     # seconds of training run, then timed, to turn a budget into steps
STEPS_ATTR = "cifarlab_steps_per_fold"


@dataclass(frozen=True)
class Preset:
    """A named search: its points (None: the recipe's lr x weight decay), pruner and budget."""
    about: str
    grid: str | None = None
    pruner: str = "halving"
    epochs: int | None = None
    time_budget: float | None = DEFAULT_TIME_BUDGET


PRESETS = {
    "lr-wd": Preset("the recipe's lr x weight decay (x1/4, x1/2, x1, x2, x4 each), successive halving"),
    "lr-wd-full": Preset("the same 25 points, every one at the full budget on every fold", pruner="none"),
    "report-adam": Preset("the report's grid: Adam, 4 lr x 6 weight decay, 2 epochs per fold, no pruning",
                          grid=REPORT_GRID, pruner="none", epochs=2, time_budget=None),
}
DEFAULT_PRESET = "lr-wd"


# The recipe's values times these (powers of two keep the values short). Symmetric around the recipe:
# with x1/4 ... x2, the best lr of the measured search was the grid's edge (x2), and a pruned search
# costs little more for more points (most are stopped at the first look), while a full grid grows
# in proportion.
RECIPE_FACTORS = (0.25, 0.5, 1, 2, 4)


def recipe_grid(base: ClassifyConfig) -> str:
    """The recipe's own lr and weight decay times RECIPE_FACTORS, as the recipe sets them for this
    data (airbench94's lr follows its batch on small data)."""
    wds = [base.weight_decay * f for f in RECIPE_FACTORS] if base.weight_decay else [0, 1e-4, 1e-3, 1e-2]
    return (f"lr={','.join(repr(base.lr * f) for f in RECIPE_FACTORS)};"
            f"weight_decay={','.join(repr(w) for w in wds)}")


@dataclass
class SearchRange:
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class SearchSpec:
    recipe: str = "fast"
    data: str = "cifar10"
    data_root: str | None = None
    grid: str | None = None           # a grid, ranges, or a preset name; None: DEFAULT_PRESET
    folds: int = 3
    epochs: int | None = None         # None: the preset's (none under a time budget: the clock rules)
    time_budget: float | None = None  # seconds per trial and fold; None: the preset's (30 s)
    steps: int | None = None          # training steps per trial and fold instead of timing the budget
    trials: int = 30
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    device: str = "auto"
    out: str = "runs/search"
    pruner: str | None = None         # halving | hyperband | none; None: the preset's (halving for grids)

    def validate(self) -> "SearchSpec":
        if self.folds < 2:
            raise CifarlabError(f"--folds must be at least 2 for cross-validation, got {self.folds}")
        if self.workers < 1:
            raise CifarlabError(f"--workers must be a positive integer, got {self.workers}")
        if self.trials < 1:
            raise CifarlabError(f"--trials must be a positive integer, got {self.trials}")
        if self.epochs is not None and self.epochs < 1:
            raise CifarlabError(f"--epochs must be a positive integer, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise CifarlabError(f"--steps must be a positive integer, got {self.steps}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise CifarlabError(f"unknown pruner {self.pruner!r}; valid: {', '.join(PRUNERS)}")
        self.space()
        self.base_config()
        return self

    def preset(self) -> Preset | None:
        name = self.grid or DEFAULT_PRESET
        if "=" in name:
            return None
        if name not in PRESETS:
            raise CifarlabError(f"--grid {name!r} is neither a preset ({', '.join(PRESETS)}) nor a grid "
                                f"like 'lr=0.1,0.2;weight_decay=0,5e-4'")
        return PRESETS[name]

    def grid_text(self) -> str:
        preset = self.preset()
        return self.grid if preset is None else preset.grid or recipe_grid(self.base_config())

    def space(self) -> dict:
        return parse_grid(self.grid_text())

    def pruner_name(self) -> str:
        preset = self.preset()
        return self.pruner or (preset.pruner if preset else "halving")

    def base_config(self) -> ClassifyConfig:
        """The recipe with this search's budget per trial and fold."""
        from .recipes import recipe_config
        preset = self.preset() or Preset("")
        given = self.epochs is not None or self.time_budget is not None or self.steps is not None
        return recipe_config(self.recipe, data=self.data, data_root=self.data_root, seed=self.seed,
                             device=self.device, logger="none", epochs=self.epochs if given else preset.epochs,
                             time_budget=self.time_budget if given else preset.time_budget)

    def settings(self) -> dict:
        """What makes two searches the same study (stored with the study, compared on joining)."""
        base = self.base_config()
        space = {name: values if isinstance(values, list) else asdict(values)
                 for name, values in self.space().items()}
        settings = {"recipe": self.recipe, "space": space, "folds": self.folds, "epochs": base.epochs,
                    "time_budget": base.time_budget, "pruner": self.pruner_name(), "seed": self.seed}
        if self.steps is not None:   # only when given: studies made before --steps existed still match
            settings["steps"] = self.steps
        if settings["pruner"] != "none":   # its first look's scores are not comparable with the plain look's
            settings["look"] = "cooled copy"
        return json.loads(json.dumps(settings))

    def default_study_name(self) -> str:
        key = json.dumps({**self.settings(), "data": self.data}, sort_keys=True)
        return f"cifarlab-{self.recipe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


# ----------------------------------------------------------------------------- the grid


def _field_types() -> dict[str, type]:
    hinted = {f.name: f.type for f in fields(ClassifyConfig)}
    searchable = ("lr", "weight_decay", "momentum", "muon_lr", "muon_momentum", "batch_size", "epochs",
                  "label_smoothing", "warmup", "bias_lr_scale", "optimizer", "schedule", "augment", "time_budget", "patience")
    return {name: {"float": float, "int": int, "str": str}.get(str(hinted[name]).split(" ")[0], float)
            for name in searchable}


def _value(text: str, kind: type, where: str):
    text = text.strip()
    if kind is str:
        return text.replace("+", ",")
    try:
        number = float(text)
    except ValueError:
        raise CifarlabError(f"grid {where}: {text!r} is not a number") from None
    if kind is int:
        if number != int(number):
            raise CifarlabError(f"grid {where}: {text!r} must be a whole number")
        return int(number)
    return number


def parse_grid(text: str) -> dict[str, list | SearchRange]:
    """'lr=0.001,0.002;weight_decay=0..0.01' -> {'lr': [0.001, 0.002], 'weight_decay': SearchRange(0, 0.01)}."""
    types = _field_types()
    space: dict[str, list | SearchRange] = {}
    parts = [p for p in text.split(";")]
    for number, part in enumerate(parts, 1):
        where = f"part {number} ({part.strip()!r})"
        if not part.strip():
            raise CifarlabError(f"grid {where}: empty; parts look like 'lr=0.001,0.002' joined by ';'")
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise CifarlabError(f"grid {where}: expected name=value,value,... or name=low..high")
        if name not in types:
            raise CifarlabError(f"grid {where}: {name!r} cannot be searched; searchable: {', '.join(types)}")
        if name in space:
            raise CifarlabError(f"grid {where}: {name!r} appears twice")
        kind = types[name]
        if ".." in values:
            if kind is str:
                raise CifarlabError(f"grid {where}: {name!r} takes a list of values, not a range")
            low_text, _, rest = values.partition("..")
            high_text, _, scale = rest.partition("..")
            if scale.strip() not in ("", "log"):
                raise CifarlabError(f"grid {where}: after low..high only '..log' may follow, got {scale!r}")
            low, high = _value(low_text, kind, where), _value(high_text, kind, where)
            if not low < high:
                raise CifarlabError(f"grid {where}: the range needs low < high")
            if scale.strip() == "log" and low <= 0:
                raise CifarlabError(f"grid {where}: a log range needs low > 0")
            space[name] = SearchRange(low, high, scale.strip() == "log", kind is int)
        else:
            items = [v for v in values.split(",")]
            if any(not v.strip() for v in items):
                raise CifarlabError(f"grid {where}: an empty value (two commas in a row or a trailing comma)")
            space[name] = list(dict.fromkeys(_value(v, kind, where) for v in items))
    return space


def grid_points(space: dict) -> list[dict] | None:
    """Every combination, or None when the space has ranges."""
    if any(isinstance(v, SearchRange) for v in space.values()):
        return None
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


# ----------------------------------------------------------------------------- one trial


def fold_trainer(config: ClassifyConfig, train_set, device: torch.device, steps: int | None = None):
    """(model, trainer) for one fold, seeded and with the whitening fitted: a trial's and the timing's."""
    from .artifact import build_classifier
    from .trainer import Trainer, init_from_data
    torch.manual_seed(config.seed)
    model = build_classifier(config.model, config.model_args, train_set.classes, config.pretrained, config.tta)
    init_from_data(model, train_set.images)
    return model, Trainer(config, model.to(device), train_set, device, steps=steps)


def fit_and_score(config: ClassifyConfig, train_set, val_set, device: torch.device, steps: int | None = None,
                  looks=(), on_look=None) -> float:
    """Train on one fold, return accuracy on the held-out fold (0 when training diverged).
    `steps`: exactly this many training steps, the schedule planned on them (no clock).
    `looks`: (label, share of the steps) at which the run pauses for `on_look(label, accuracy)`,
    which may stop it by raising. The accuracy is a copy's that ran the rest of the schedule in as
    many steps again (Trainer.cooled_copy), scored without TTA: a look, not the result. The run
    itself goes on unchanged, so a looked-at run ends exactly as one that was not."""
    from .trainer import TrainingDiverged, evaluate, steps_per_epoch
    if steps is not None:
        epochs = math.ceil(steps / steps_per_epoch(len(train_set), config.batch_size))
        config = replace(config, epochs=epochs, time_budget=None)
    model, trainer = fold_trainer(config, train_set, device, steps)
    total = trainer.total_steps
    pauses = [(label, max(1, round(total * share))) for label, share in looks] if total else []
    pauses = [(label, at) for label, at in pauses if at < total]

    def score(scored, tta: bool) -> float:
        return evaluate(scored, val_set.images, val_set.labels, device, channels_last=config.channels_last,
                        tta=config.tta and tta)["accuracy"]
    try:
        while trainer.limits.epochs_left(trainer.epoch) and not trainer.run_is_over:
            trainer.train_epoch(pause_at=pauses[0][1] if pauses else None)
            while pauses and trainer.step >= pauses[0][1]:
                label, at = pauses.pop(0)
                on_look(label, score(trainer.cooled_copy(at), tta=False))
    except TrainingDiverged:
        return 0.0
    except BudgetEndedInFirstEpoch:
        pass  # an error for a training run, but a search rung is a short look by design: score what it learned
    return score(model, tta=True)


def steps_in(seconds: float, config: ClassifyConfig, train_set, device: torch.device) -> int:
    """How many of `config`'s training steps fit in `seconds` on this machine, at the current
    thread count: the rate of a short timed run after its first steps (their one-off set-up
    would make the rate too low), times the budget."""
    warm_up, timed = min(WARM_UP, seconds / 4), min(CALIBRATION, seconds)   # a tiny budget needs no precision
    probe = replace(config, epochs=None, time_budget=warm_up)
    _, trainer = fold_trainer(probe, train_set, device)
    marks = []
    for budget in (warm_up, warm_up + timed):
        trainer.config = replace(probe, time_budget=budget)
        try:
            while not trainer.out_of_time:
                trainer.train_epoch()
        except BudgetEndedInFirstEpoch:
            pass
        marks.append((trainer.step, trainer.elapsed))
    (steps_before, before), (steps_after, after) = marks
    return max(1, round(seconds * (steps_after - steps_before) / max(after - before, 1e-9)))


def budget_words(spec: SearchSpec, steps: int | None) -> str:
    """A trial's budget per fold, for the first line and the report: '30 s = 98 steps' (timed),
    '76 steps' (--steps) or '2 epoch(s)'."""
    base = spec.base_config()
    if spec.steps:
        return f"{spec.steps} steps"
    if base.time_budget is None:
        return f"{base.epochs} epoch(s)"
    return (f"{base.time_budget:g} s" + (f" = {steps} steps" if steps else "")
            + (f" (at most {base.epochs} epochs)" if base.epochs else ""))


def is_duplicate(trial) -> bool:
    return "duplicate_of" in trial.user_attrs


class Objective:
    def __init__(self, spec: SearchSpec, space: dict, quiet: bool, steps: int | None = None):
        from .data import kfold_indices, load_labelled
        self.spec, self.space, self.quiet, self.steps = spec, space, quiet, steps
        self.base = spec.base_config()
        self.pruned = spec.pruner_name() != "none"
        self.pool = load_labelled(spec.data, "train", spec.data_root)
        self.folds = kfold_indices(len(self.pool), spec.folds, spec.seed)
        self.device = resolve_device(spec.device)

    def suggest(self, trial) -> dict:
        params = {}
        for name, values in self.space.items():
            if isinstance(values, SearchRange):
                suggest = trial.suggest_int if values.integer else trial.suggest_float
                params[name] = suggest(name, values.low, values.high, log=values.log)
            else:
                params[name] = trial.suggest_categorical(name, values)
        return params

    def looks(self, config: ClassifyConfig) -> list[tuple[int, float]]:
        """(step, share) of the looks at fold 1's run: ninths of the fold's budget."""
        return [(round(share * 9), share) for share in RUNGS] if self.pruned else []

    def score(self, config: ClassifyConfig, fold: int, looks=(), on_look=None) -> float:
        train_index, val_index = self.folds[fold]
        return fit_and_score(config, self.pool.subset(train_index), self.pool.subset(val_index), self.device,
                             self.steps, looks, on_look)

    def __call__(self, trial) -> float:
        params = self.suggest(trial)
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        settled = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)   # a pruned point is settled too
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=settled)
                   if t.params == params and t.number < trial.number and not is_duplicate(t)]
        if earlier:  # drawn before (by two workers at once, or queued first as the recipe's point): settled there
            trial.set_user_attr("duplicate_of", earlier[0].number)
            raise optuna.TrialPruned(f"duplicate of trial {earlier[0].number}")
        config = replace(self.base, **params).validate()
        started, accuracies, last = time.perf_counter(), [], None

        def look(step: int, accuracy: float) -> None:
            nonlocal last
            last = (step, accuracy)
            trial.report(accuracy, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
        try:
            for k in range(len(self.folds)):
                accuracies.append(self.score(config, k, *((self.looks(config), look) if k == 0 else ())))
                last = (9 * (k + 1), statistics.fmean(accuracies))
                trial.report(last[1], last[0])
                if k + 1 < len(self.folds) and self.pruned and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {k + 1} fold(s)")
        finally:
            seconds = time.perf_counter() - started
            trial.set_user_attr("fold_accuracies", accuracies)
            trial.set_user_attr("seconds", seconds)
            if not self.quiet and last is not None:
                shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
                result = (f"{last[1]:.2%} ({len(accuracies)} folds)" if len(accuracies) == len(self.folds)
                          else f"pruned at step {last[0]} ({last[1]:.2%})")
                print(f"trial {trial.number:3d}  {shown}  ->  {result}, {seconds:.0f}s, pid {os.getpid()}",
                      file=sys.stderr, flush=True)
        trial.set_user_attr("std", statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0)
        return statistics.fmean(accuracies)


# ----------------------------------------------------------------------------- storage and study


def heartbeat() -> tuple[int, int]:
    """(interval, grace period) in seconds for database storages; tests set small ones."""
    text = os.environ.get(HEARTBEAT_ENV, "30,120")
    try:
        values = [int(v) for v in text.split(",")]
        interval, grace = values[0], values[1] if len(values) > 1 else 4 * values[0]
        if len(values) > 2 or interval < 1 or grace <= interval:
            raise ValueError
    except ValueError:
        raise CifarlabError(f"${HEARTBEAT_ENV} must be 'INTERVAL[,GRACE]' whole seconds with GRACE > INTERVAL, "
                            f"got {text!r}") from None
    return interval, grace


def safe_url(url: str) -> str:
    """The storage URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def retry_callback():
    """Optuna's re-queueing of a dead worker's trial (at most twice); the class was renamed in 4.9."""
    from optuna import storages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
        return retry(max_retry=2)


def with_installed_driver(url: str) -> str:
    """postgresql:// means psycopg 3 to SQLAlchemy 2.1 and psycopg2 to 2.0: name the one installed."""
    import importlib.util
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def make_storage(spec: SearchSpec):
    """A database URL (heartbeats find dead workers on any machine) or a journal file (one machine)."""
    import inspect
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    target = spec.storage or str(Path(spec.out) / "study.journal")
    if "://" in target:
        interval, grace = heartbeat()
        engine = {"connect_args": {"connect_timeout": 10}} if target.startswith("postgresql") else None
        callback = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                    in inspect.signature(RDBStorage).parameters else "failed_trial_callback")  # renamed in 4.9
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(with_installed_driver(target), engine_kwargs=engine, heartbeat_interval=interval,
                                  grace_period=grace, **{callback: retry_callback()})
        except ImportError as e:
            extra = " (pip install 'cifarlab[postgres]')" if target.startswith("postgresql") else ""
            raise CifarlabError(f"--storage {safe_url(target)} needs a database driver that is not installed"
                                f"{extra}: {e}") from None
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CifarlabError(f"cannot open --storage {safe_url(target)}: {first}") from None
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(target))


def recipe_point(base: ClassifyConfig, space: dict) -> dict | None:
    """The recipe's own setting, when the space holds it: the first trial. Successive halving lets
    the first trials to reach a look run on (there is nothing to compare them with yet), so the
    first should be the user's best guess, not a random corner; later trials must beat it."""
    point = {name: getattr(base, name) for name in space}
    for name, values in space.items():
        inside = (values.low <= point[name] <= values.high if isinstance(values, SearchRange)
                  else point[name] in values)
        if not inside:
            return None
    return point


def make_pruner(name: str, folds: int):
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG, reduction_factor=REDUCTION)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=FIRST_RUNG, max_resource=9 * folds,
                                              reduction_factor=REDUCTION)
    return optuna.pruners.NopPruner()


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's, minus one crash (optuna 5.0): a queued trial has no grid id, and `after_trial`
    looked one up when a single grid point was left unvisited."""

    def after_trial(self, study, trial, state, values) -> None:
        if "grid_id" in study._storage.get_trial_system_attrs(trial._trial_id):
            super().after_trial(study, trial, state, values)


def open_study(spec: SearchSpec, space: dict):
    """Create or join the study; joining one made with other settings is refused, naming them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=spec.seed) if grid_points(space) is None
               else GridSampler(space, seed=spec.seed))
    name = spec.study_name or spec.default_study_name()
    study = optuna.create_study(study_name=name, storage=make_storage(spec), sampler=sampler,
                                pruner=make_pruner(spec.pruner_name(), spec.folds), direction="maximize",
                                load_if_exists=True)
    mine = spec.settings()
    theirs = study.user_attrs.get("cifarlab_settings")
    if theirs is None:
        study.set_user_attr("cifarlab_settings", mine)
        start = recipe_point(spec.base_config(), space)
        if start is not None:
            study.enqueue_trial(start)
    elif theirs != mine:
        diff = "; ".join(f"{k} {json.dumps(theirs.get(k))} there, {json.dumps(mine[k])} here"
                         for k in mine if theirs.get(k) != mine[k])
        raise CifarlabError(f"study {name!r} exists with other settings ({diff}): use the same settings "
                            f"or another --study-name")
    return study


def fold_steps(study, spec: SearchSpec, threads: int, pool) -> int | None:
    """A time budget per fold in training steps, the same for every trial, worker and machine, so
    that settings are compared on equal training and a rerun scores alike: timed once on fold 1 of
    `pool`, when the study is made (at the workers' thread count), and stored with it. None: no
    clock (--epochs)."""
    from .data import kfold_indices
    from .trainer import steps_per_epoch
    base = spec.base_config()
    if spec.steps is not None:
        return spec.steps
    if base.time_budget is None:
        return None
    if STEPS_ATTR not in study.user_attrs:
        train_set = pool.subset(kfold_indices(len(pool), spec.folds, spec.seed)[0][0])
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            steps = steps_in(base.time_budget, base, train_set, resolve_device(spec.device))
        finally:
            torch.set_num_threads(before)
        if base.epochs is not None:
            steps = min(steps, base.epochs * steps_per_epoch(len(train_set), base.batch_size))
        study.set_user_attr(STEPS_ATTR, steps)
    return study.user_attrs[STEPS_ATTR]   # another machine may have stored its timing first: theirs holds


# ----------------------------------------------------------------------------- workers


def _worker_alive(pid) -> bool:
    """The process exists and (where /proc tells) is a cifarlab process, not a reused pid."""
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    try:
        return b"cifarlab" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return True


def _local(trial) -> bool:
    return trial.user_attrs.get("host") == HOST and "pid" in trial.user_attrs


def heartbeats(study) -> bool:
    """Whether the storage records heartbeats (a database; Optuna wraps it in a cache)."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None


def recover_dead_trials(study) -> None:
    """Trials of workers that died become FAIL and are queued again (at most twice). Databases
    go by heartbeat (any machine); the journal by process id (this machine)."""
    if heartbeats(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return
    retry = retry_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _local(t) and t.user_attrs["pid"] != os.getpid() and not _worker_alive(t.user_attrs["pid"]):
            try:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker took it over first
            retry(study, study._storage.get_trial(t._trial_id))


def requeue_failed(study, points: list[dict] | None) -> None:
    """Resuming: grid points whose every trial failed (Ctrl-C, an error) are queued once more."""
    trials = [t for t in study.get_trials(deepcopy=False) if not is_duplicate(t)]
    for point in points or []:
        tried = [t for t in trials if t.params == point]
        if tried and all(t.state == TrialState.FAIL for t in tried):
            study.enqueue_trial(point)


def check_points(spec: SearchSpec, space: dict) -> None:
    """Every grid point (or both ends of every range) makes a valid config: one line now, not a
    failed trial per point later."""
    base = spec.base_config()
    points = grid_points(space) or [{n: v.low if isinstance(v, SearchRange) else v[0] for n, v in space.items()},
                                    {n: v.high if isinstance(v, SearchRange) else v[-1] for n, v in space.items()}]
    for point in points:
        replace(base, **point).validate()


def next_move(study, points: list[dict] | None, trials: int) -> str:
    """'run' a trial, 'wait' for trials running elsewhere (they finish or are recovered), or 'stop'."""
    everything = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in everything):
        return "run"
    running = [t for t in everything if t.state == TrialState.RUNNING]
    if points is None:
        finished = [t for t in everything if t.state.is_finished() and not is_duplicate(t)]
        if len(finished) + len(running) < trials:
            return "run"
    else:
        started = [t.params for t in everything if t.state != TrialState.WAITING]
        if any(p not in started for p in points):
            return "run"
    watchable = heartbeats(study) or all(_local(t) for t in running)
    return "wait" if running and watchable else "stop"


def work(spec: SearchSpec, quiet: bool) -> None:
    """One worker: run trials until nothing is left to start, then wait for trials running
    elsewhere, taking over those of workers that die."""
    space = spec.space()
    study = open_study(spec, space)
    points = grid_points(space)
    objective = None
    while True:
        recover_dead_trials(study)
        move = next_move(study, points, spec.trials)
        if move == "stop":
            return
        if move == "wait":
            time.sleep(POLL)
            continue
        objective = objective or Objective(spec, space, quiet, spec.steps or study.user_attrs.get(STEPS_ATTR))
        study.optimize(objective, n_trials=1, catch=(CifarlabError,))


def search_worker(spec_dict: dict, threads: int, quiet: bool) -> None:
    """A worker process started by run_search."""
    torch.set_num_threads(threads)
    work(SearchSpec(**spec_dict), quiet)


def run_search(spec: SearchSpec, quiet: bool = False) -> Path:
    """Run (or resume, or join) the search with `spec.workers` local processes; returns report.md."""
    spec.validate()
    space = spec.space()
    check_points(spec, space)
    from .data import kfold_indices, load_labelled
    pool = load_labelled(spec.data, "train", spec.data_root)  # fails early and clearly, before any worker starts
    kfold_indices(len(pool), spec.folds, spec.seed)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, space)
    requeue_failed(study, grid_points(space))
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    steps = fold_steps(study, spec, threads, pool)
    if not quiet:
        print(f"search: study {study.study_name!r}, {spec.workers} worker(s) x {threads} thread(s), "
              f"{len(grid_points(space) or []) or spec.trials} setting(s), {spec.folds} folds, "
              f"{budget_words(spec, steps)} per fold, pruner {spec.pruner_name()}", file=sys.stderr)
    started = time.perf_counter()
    if spec.workers == 1:
        torch.set_num_threads(threads)
        work(spec, quiet)
    else:  # fresh interpreters (not fork: forking after torch's thread pools exist can hang)
        command = [sys.executable, "-m", "cifarlab.classify.search", json.dumps(asdict(spec)), str(threads)]
        command += ["--quiet"] * quiet
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        workers = [subprocess.Popen(command, env=env) for _ in range(spec.workers)]
        try:
            codes = [w.wait() for w in workers]
        finally:  # Ctrl-C or a kill of this process must not leave workers running unseen
            for w in workers:
                if w.poll() is None:
                    w.terminate()
        dead = [c for c in codes if c]
        if dead and not quiet:
            print(f"search: {len(dead)} worker(s) exited abnormally (codes {dead}); the study stays consistent "
                  f"and their unfinished settings run again on the next run", file=sys.stderr)
    from .search_report import write_search_report
    return write_search_report(study, space, spec, out, time.perf_counter() - started)


if __name__ == "__main__":  # a worker process started by run_search: SPEC_JSON THREADS [--quiet]
    search_worker(json.loads(sys.argv[1]), int(sys.argv[2]), "--quiet" in sys.argv[3:])
