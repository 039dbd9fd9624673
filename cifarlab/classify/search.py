"""k-fold cross-validated hyperparameter search on Optuna.

    cifarlab classify search --data DATA --folds 3 --workers 2                 # the report's 24-point grid
    cifarlab classify search --grid "lr=0.1,0.2,0.4;label_smoothing=0,0.2"    # any grid (GridSampler)
    cifarlab classify search --grid "lr=1e-3..1..log;weight_decay=0..1e-3" --trials 40   # ranges (TPE)

A grid is ``name=v1,v2,...`` parts joined by ``;``; a part with one value fixes that setting
(the default grid fixes ``optimizer=adam``, as the report's search did). Ranges are
``low..high`` (``..log`` after them for a log scale). In values of ``augment`` write ``+``
for the spec's commas: ``augment=crop:2+flip,none``.

Every trial trains the recipe with its settings once per fold and scores the held-out fold;
its value is the mean accuracy (fold accuracies, std and time are kept as trial attributes).
Workers are processes that share one Optuna study through its storage: a journal file in
OUT by default, or ``--storage`` (``sqlite:///search.db``; ``postgresql://user:pw@host/db`` to
join workers on several machines). Running the same command again resumes the study: finished
trials are kept, trials of workers that died are marked failed and their settings run again.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..devices import resolve_device
from ..errors import CifarlabError
from .config import ClassifyConfig

DEFAULT_GRID = "optimizer=adam;lr=0.001,0.002,0.0015,0.003;weight_decay=0,0.001,0.002,0.003,0.005,0.01"
DEFAULT_EPOCHS = 2
HOST = socket.gethostname()
MAX_ROUNDS = 3


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
    grid: str | None = None
    folds: int = 3
    epochs: int | None = None
    time_budget: float | None = None
    trials: int = 30
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    device: str = "auto"
    out: str = "runs/search"

    def validate(self) -> "SearchSpec":
        if self.folds < 2:
            raise CifarlabError(f"--folds must be at least 2 for cross-validation, got {self.folds}")
        if self.workers < 1:
            raise CifarlabError(f"--workers must be a positive integer, got {self.workers}")
        if self.trials < 1:
            raise CifarlabError(f"--trials must be a positive integer, got {self.trials}")
        if self.epochs is not None and self.epochs < 1:
            raise CifarlabError(f"--epochs must be a positive integer, got {self.epochs}")
        parse_grid(self.grid or DEFAULT_GRID)
        self.base_config()
        return self

    def base_config(self) -> ClassifyConfig:
        from .recipes import recipe_config
        return recipe_config(self.recipe, data=self.data, data_root=self.data_root, seed=self.seed,
                             device=self.device, logger="none", epochs=self.epochs or DEFAULT_EPOCHS,
                             time_budget=self.time_budget)

    def default_study_name(self) -> str:
        key = repr((self.recipe, self.data, self.grid or DEFAULT_GRID, self.folds, self.epochs, self.time_budget,
                    self.seed))
        return f"cifarlab-{self.recipe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


# ----------------------------------------------------------------------------- the grid


def _field_types() -> dict[str, type]:
    hinted = {f.name: f.type for f in fields(ClassifyConfig)}
    searchable = ("lr", "weight_decay", "momentum", "batch_size", "epochs", "label_smoothing", "warmup",
                  "bias_lr_scale", "optimizer", "schedule", "augment", "time_budget", "patience")
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


def fit_and_score(config: ClassifyConfig, train_set, val_set, device: torch.device) -> float:
    """Train on one fold, return accuracy on the held-out fold (0 when training diverged)."""
    from .artifact import build_classifier
    from .trainer import Trainer, TrainingDiverged, evaluate, init_from_data
    torch.manual_seed(config.seed)
    model = build_classifier(config.model, config.model_args, train_set.classes, config.pretrained, config.tta)
    init_from_data(model, train_set.images)
    model.to(device)
    trainer = Trainer(config, model, train_set, device)
    try:
        while trainer.epoch < config.epochs and not trainer.out_of_time:
            trainer.train_epoch()
    except TrainingDiverged:
        return 0.0
    return evaluate(model, val_set.images, val_set.labels, device, channels_last=config.channels_last)["accuracy"]


class Objective:
    def __init__(self, spec: SearchSpec, space: dict, quiet: bool):
        from .data import kfold_indices, load_labelled
        self.spec, self.space, self.quiet = spec, space, quiet
        self.base = spec.base_config()
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

    def __call__(self, trial) -> float:
        params = self.suggest(trial)
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        others = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        done = [t for t in others if t.params == params and t.number != trial.number]
        if done:  # two workers may draw the same grid point at the very end of a grid
            raise optuna.TrialPruned(f"duplicate of trial {done[0].number}")
        config = replace(self.base, **params).validate()
        started, accuracies = time.perf_counter(), []
        for k, (train_index, val_index) in enumerate(self.folds):
            accuracies.append(fit_and_score(config, self.pool.subset(train_index), self.pool.subset(val_index),
                                            self.device))
            trial.report(accuracies[-1], k)
        seconds = time.perf_counter() - started
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        trial.set_user_attr("fold_accuracies", accuracies)
        trial.set_user_attr("std", std)
        trial.set_user_attr("seconds", seconds)
        if not self.quiet:
            shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            print(f"trial {trial.number:3d}  {shown}  ->  {statistics.fmean(accuracies):.2%} ± {std:.2%} "
                  f"({len(accuracies)} folds, {seconds:.0f}s, pid {os.getpid()})", file=sys.stderr, flush=True)
        return statistics.fmean(accuracies)


# ----------------------------------------------------------------------------- the study


def make_storage(spec: SearchSpec):
    from optuna.storages import JournalStorage, RDBStorage, RetryFailedTrialCallback
    from optuna.storages.journal import JournalFileBackend
    target = spec.storage or str(Path(spec.out) / "study.journal")
    if "://" in target:  # sqlite:///file.db, postgresql://...: heartbeats mark dead workers' trials failed
        try:
            return RDBStorage(target, heartbeat_interval=30, grace_period=120,
                              failed_trial_callback=RetryFailedTrialCallback(max_retry=2))
        except (ImportError, ModuleNotFoundError) as e:
            raise CifarlabError(f"--storage {target!r} needs a database driver that is not installed: {e}") from None
        except Exception as e:
            raise CifarlabError(f"cannot open --storage {target!r}: {str(e).splitlines()[0][:200]}") from None
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(target))


def open_study(spec: SearchSpec, space: dict, retry: bool = False):
    """A retry round runs queued (enqueue_trial) settings, which Optuna's GridSampler cannot take."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if grid_points(space) is None:
        sampler = optuna.samplers.TPESampler(seed=spec.seed)
    elif retry:
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        sampler = optuna.samplers.GridSampler(space, seed=spec.seed)
    return optuna.create_study(study_name=spec.study_name or spec.default_study_name(), storage=make_storage(spec),
                               sampler=sampler, direction="maximize", load_if_exists=True)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def fail_orphans(study) -> int:
    """RUNNING trials of this host whose process is gone (a killed worker) become FAIL."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == HOST and not _pid_alive(t.user_attrs.get("pid")):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            count += 1
    return count


def missing_points(study, points: list[dict]) -> list[dict]:
    finished = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return [p for p in points if p not in finished]


def _stop_when_done(points, trials):
    """Stop a worker once nothing is left for it to start (a grid point still running elsewhere is
    that worker's job; if it dies, the next round of run_search runs the point again)."""

    def callback(study, trial):
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if points is None:
            if len(complete) >= trials:
                study.stop()
            return
        running = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and all(p in running for p in missing_points(study, points)):
            study.stop()
    return callback


def search_worker(spec_dict: dict, threads: int, quiet: bool, retry: bool = False) -> None:
    """One worker process: join the study and run trials until the grid (or --trials) is done."""
    torch.set_num_threads(threads)
    spec = SearchSpec(**spec_dict)
    space = parse_grid(spec.grid or DEFAULT_GRID)
    study = open_study(spec, space, retry)
    points = grid_points(space)
    if points is not None and not missing_points(study, points):
        return
    study.optimize(Objective(spec, space, quiet), callbacks=[_stop_when_done(points, spec.trials)],
                   catch=(CifarlabError,))


def run_search(spec: SearchSpec, quiet: bool = False) -> Path:
    """Run (or resume) the search with `spec.workers` local processes; returns report.md.

    Rounds: workers run until nothing is left to start; settings whose trials failed or whose
    worker died are then queued again and run in the next round."""
    spec.validate()
    space = parse_grid(spec.grid or DEFAULT_GRID)
    points = grid_points(space)
    from .data import kfold_indices, load_labelled
    pool = load_labelled(spec.data, "train", spec.data_root)  # fails early and clearly, before any worker starts
    kfold_indices(len(pool), spec.folds, spec.seed)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, space)
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    started = time.perf_counter()
    for _ in range(MAX_ROUNDS):
        retry = False
        orphans = fail_orphans(study)
        if points is not None:
            todo = missing_points(study, points)
            if not todo:
                break
            waiting = [t.params for t in study.get_trials(deepcopy=False,
                                                          states=(TrialState.WAITING,))]
            retry = bool(orphans or study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if retry:  # the grid sampler counts failed points as visited: queue them again explicitly
                for params in todo:
                    if params not in waiting:
                        study.enqueue_trial(params)
                study = open_study(spec, space, retry=True)
        elif len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= spec.trials:
            break
        if not quiet:
            print(f"search: study {study.study_name!r}, {spec.workers} worker(s) x {threads} thread(s), "
                  f"{len(todo) if points is not None else spec.trials} setting(s) to run, {spec.folds} folds each",
                  file=sys.stderr)
        if spec.workers == 1:
            torch.set_num_threads(threads)
            study.optimize(Objective(spec, space, quiet), callbacks=[_stop_when_done(points, spec.trials)],
                           catch=(CifarlabError,))
        else:  # fresh interpreters (not fork: forking after torch's thread pools exist can hang)
            spec_json = json.dumps(asdict(spec))
            command = [sys.executable, "-m", "cifarlab.classify.search", spec_json, str(threads)]
            command += ["--quiet"] * quiet + ["--retry"] * retry
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
                print(f"search: {len(dead)} worker(s) exited abnormally (codes {dead}); the study stays "
                      f"consistent and their unfinished settings run again", file=sys.stderr)
    from .search_report import write_search_report
    return write_search_report(study, space, spec, out, time.perf_counter() - started)



if __name__ == "__main__":  # a worker process started by run_search: SPEC_JSON THREADS [--quiet]
    search_worker(json.loads(sys.argv[1]), int(sys.argv[2]), "--quiet" in sys.argv[3:], "--retry" in sys.argv[3:])
