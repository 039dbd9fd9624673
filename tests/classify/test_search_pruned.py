"""The pruned (successive halving / Hyperband) search, and the search's answers to bad input."""
import csv
from dataclasses import replace

import optuna
import pytest
import torch
from optuna.trial import TrialState

import cifarlab.cli
from cifarlab.classify.search import (HEARTBEAT_ENV, Objective, SearchSpec, grid_points, heartbeat, open_study,
                                      run_search)
from cifarlab.classify.trainer import Trainer
from cifarlab.errors import CifarlabError

# lr 1e-6 cannot learn the tinted classes in 9 epochs; lr 3e-3 learns them: the pruner has something to prune
GRID = "lr=1e-6,2e-6,4e-6,8e-6,0.003,0.004;batch_size=8"


def search(folder, tmp_path, **given):
    spec = SearchSpec(**{**dict(recipe="baseline", data=str(folder), grid=GRID, folds=2, epochs=9,
                                out=str(tmp_path / "search")), **given})
    run_search(spec, quiet=True)
    study = open_study(spec, spec.space())
    return spec, study.get_trials(), list(csv.DictReader(open(tmp_path / "search" / "trials.csv")))


@pytest.mark.parametrize("pruner", ["halving", "hyperband"])
def test_pruned_search_settles_every_point_once_and_keeps_the_learning_ones(make_folder, tmp_path, pruner):
    _, trials, rows = search(make_folder(tmp_path / "data"), tmp_path, pruner=pruner)
    states = [t.state for t in trials]
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    assert sorted(t.params["lr"] for t in trials) == [1e-6, 2e-6, 4e-6, 8e-6, 0.003, 0.004]  # each point once
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert best.params["lr"] >= 0.003 and best.value > 0.9
    assert sorted(best.intermediate_values) == [3, 9, 18]  # fold 1 at a third of its run, then each fold
    if pruner == "halving":  # hyperband may put every trial in a bracket that starts late; halving must prune
        assert states.count(TrialState.PRUNED) >= 2
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert t.intermediate_values and "duplicate_of" not in t.user_attrs
            assert max(t.intermediate_values) < 18  # stopped before the last fold
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"} and len(rows) == 6


def test_a_trial_trains_exactly_its_steps_and_a_look_part_way_changes_nothing(make_folder, tmp_path):
    from cifarlab.classify.data import load_labelled
    from cifarlab.classify.search import fit_and_score
    from cifarlab.classify.recipes import recipe_config
    pool = load_labelled(str(make_folder(tmp_path / "data")), "train")
    train_set, val_set = pool.subset(torch.arange(0, len(pool), 2)), pool.subset(torch.arange(1, len(pool), 2))
    config = recipe_config("fast", batch_size=8, time_budget=30, logger="none")   # the clock is ignored
    ends, seen = [], []
    real_step = Trainer.train_epoch

    def counting(self, *a, **k):
        row = real_step(self, *a, **k)
        ends.append((self.step, self.total_steps, self.progress()))
        return row
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "train_epoch", counting)
        plain = fit_and_score(config, train_set, val_set, torch.device("cpu"), steps=11)
    assert ends[-1] == (11, 11, 1.0)   # not a whole number of epochs: it stops at the step, annealed
    assert fit_and_score(config, train_set, val_set, torch.device("cpu"), steps=11) == plain   # rerun: the same
    looked = fit_and_score(config, train_set, val_set, torch.device("cpu"), steps=11,
                           looks=[(1, 1 / 9), (3, 1 / 3)], on_look=lambda step, a: seen.append((step, a)))
    assert [step for step, _ in seen] == [1, 3] and looked == plain   # paused mid-epoch, same end
    assert all(0 <= a <= 1 for _, a in seen)

    def stop(step, accuracy):
        raise optuna.TrialPruned(f"at {step}")
    with pytest.raises(optuna.TrialPruned, match="at 1"):
        fit_and_score(config, train_set, val_set, torch.device("cpu"), steps=11, looks=[(1, 1 / 9)], on_look=stop)


def test_a_look_scores_a_copy_that_ran_the_rest_of_the_schedule_and_leaves_the_run_alone(make_folder, tmp_path):
    from cifarlab.classify.data import load_labelled
    from cifarlab.classify.search import fold_trainer
    from cifarlab.classify.recipes import recipe_config
    pool = load_labelled(str(make_folder(tmp_path / "data")), "train")
    config = recipe_config("fast", batch_size=8, epochs=2, logger="none", augment="altflip,crop:4,mixup:0.2")
    _, trainer = fold_trainer(config, pool.subset(torch.arange(0, len(pool), 2)), torch.device("cpu"), steps=12)
    while trainer.step < 4:
        trainer.train_epoch(pause_at=4)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    seen = []
    real_set_lr = Trainer.set_lr

    def recording(self):
        lr = real_set_lr(self)
        seen.append((self is trainer, self.progress(), lr, self.resized(torch.zeros(1, 3, 32, 32)).shape[-1]))
        return lr
    rng = torch.get_rng_state()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "set_lr", recording)
        copy = trainer.cooled_copy(4)
    assert torch.equal(torch.get_rng_state(), rng)                 # MixUp's draws in the copy: the run's RNG stays
    assert [mine for mine, *_ in seen] == [False] * 4               # the copy trained, 4 steps
    assert [p for _, p, _, _ in seen] == pytest.approx([1 / 3, 1 / 2, 2 / 3, 5 / 6])   # from 4/12 to the end
    assert [size for *_, size in seen] == [24, 32, 32, 32]          # fast's 24 px half ends as the run would
    assert seen[-1][2] < seen[0][2]                                # annealing
    assert trainer.step == 4                                        # the run is where it paused
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in copy.state_dict().items())
    assert trainer.model is not copy and trainer.images is not None


def test_the_budget_is_timed_once_and_stored_with_the_study(make_folder, tmp_path, monkeypatch):
    import cifarlab.classify.search as search_module
    timings = []
    real = search_module.steps_in

    def timed(seconds, *args):
        timings.append(seconds)
        return real(0.5, *args)
    monkeypatch.setattr(search_module, "steps_in", timed)
    monkeypatch.setattr(search_module, "CALIBRATION", 0.3)
    spec = SearchSpec(recipe="baseline", data=str(make_folder(tmp_path / "data")), grid="lr=0.003;batch_size=8",
                      folds=2, time_budget=2, out=str(tmp_path / "s"))
    report = run_search(spec, quiet=False)
    study = open_study(spec, spec.space())
    stored = study.user_attrs[search_module.STEPS_ATTR]
    assert timings == [2] and stored >= 1 and f"2 s = {stored} steps of training" in report.read_text()
    run_search(spec, quiet=True)   # resumed: the stored steps hold
    assert timings == [2]
    given = replace(spec, steps=5, out=str(tmp_path / "s5"))    # --steps: no timing, and its own study
    report = run_search(given, quiet=False)
    assert timings == [2] and "5 steps of training per trial and fold (--steps)" in report.read_text() and open_study(given, given.space()).study_name != study.study_name
    trials = open_study(given, given.space()).get_trials()
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)


def test_a_budget_too_small_for_one_epoch_still_scores_every_point(make_folder, tmp_path):
    _, trials, _ = search(make_folder(tmp_path / "data"), tmp_path, grid="lr=0.001,0.003;batch_size=8",
                          epochs=1000, time_budget=1e-4)
    assert [t.state for t in trials].count(TrialState.FAIL) == 0
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) and len(trials) == 2


def test_joining_a_study_made_with_other_settings_names_the_study_and_the_conflict(make_folder, tmp_path):
    folder = make_folder(tmp_path / "data")
    spec = SearchSpec(recipe="baseline", data=str(folder), grid="lr=0.001;batch_size=8", folds=2, epochs=1,
                      study_name="shared", out=str(tmp_path / "s"))
    run_search(spec, quiet=True)
    for change, expected in [(dict(folds=3), "folds 2 there, 3 here"),
                             (dict(grid="lr=0.002;batch_size=8"), "space"),
                             (dict(recipe="seed004"), 'recipe "baseline" there, "seed004" here')]:
        with pytest.raises(CifarlabError) as e:
            run_search(replace(spec, **change), quiet=True)
        message = str(e.value)
        assert "study 'shared' exists with other settings" in message and expected in message
        assert "\n" not in message


def run(capsys, *args):
    code = cifarlab.cli.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_unreachable_storage_is_one_line_naming_the_url_without_its_password(capsys, tiny_folder, tmp_path):
    url = "postgresql://cifarlab:s3cret@127.0.0.1:1/optuna"  # port 1: nothing listens there
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--storage", url,
                     "--out", str(tmp_path / "s"))
    assert code == 2 and line.startswith("error: ") and "127.0.0.1:1/optuna" in line and "s3cret" not in line
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--out", str(tmp_path / "s"),
                     "--storage", f"sqlite:///{tmp_path}/no/such/folder/search.db")
    assert code == 2 and "cannot open --storage sqlite:///" in line


def test_unknown_preset_and_bad_heartbeat_are_refused(capsys, tiny_folder, tmp_path, monkeypatch):
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--grid", "lr-wd-huge",
                     "--out", str(tmp_path / "s"))
    assert code == 2 and "'lr-wd-huge' is neither a preset (lr-wd, lr-wd-full, report-adam)" in line
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--steps", "0",
                     "--out", str(tmp_path / "s"))
    assert code == 2 and "--steps must be a positive integer, got 0" in line
    monkeypatch.setenv(HEARTBEAT_ENV, "5,2")
    with pytest.raises(CifarlabError, match="GRACE > INTERVAL"):
        heartbeat()
    monkeypatch.setenv(HEARTBEAT_ENV, "2")
    assert heartbeat() == (2, 8)


def test_presets_are_grids_of_known_size():
    assert len(grid_points(SearchSpec(grid="lr-wd").space())) == 25
    assert len(grid_points(SearchSpec(grid="report-adam").space())) == 24


def test_a_best_setting_on_the_grids_edge_is_pointed_out():
    from cifarlab.classify.search_report import edge_note
    space = {"lr": [0.2, 0.4, 0.8, 1.6], "weight_decay": [1.25e-4, 2.5e-4, 5e-4, 1e-3], "optimizer": ["sgd"]}
    assert "lr=1.6 is the largest value searched" in edge_note({"lr": 1.6, "weight_decay": 5e-4, "optimizer": "sgd"},
                                                             space)
    assert edge_note({"lr": 0.8, "weight_decay": 5e-4, "optimizer": "sgd"}, space) == ""


def test_a_pruned_trial_is_looked_at_a_third_of_the_way_into_fold_1(make_folder, tmp_path):
    spec = SearchSpec(recipe="fast", data=str(make_folder(tmp_path / "data")), folds=2, time_budget=30)
    objective = Objective(spec, spec.space(), quiet=True, steps=270)
    assert objective.looks(objective.base) == [(3, pytest.approx(1 / 3))]
    objective.pruned = False
    assert objective.looks(objective.base) == []


def test_the_recipes_own_setting_is_tried_first_and_never_twice(make_folder, tmp_path):
    from cifarlab.classify.search import recipe_point
    spec = SearchSpec(recipe="fast", data=str(make_folder(tmp_path / "data")), folds=2, time_budget=30,
                      out=str(tmp_path / "s"))
    base = spec.base_config()
    assert recipe_point(base, spec.space()) == {"lr": base.lr, "weight_decay": base.weight_decay}
    assert recipe_point(base, SearchSpec(grid="lr=0.1,0.2").space()) is None          # not a grid point
    assert recipe_point(base, SearchSpec(grid="lr=0.01..1..log").space()) == {"lr": base.lr}
    study = open_study(spec, spec.space())
    assert [(t.state, t.params) for t in study.get_trials()] == [(TrialState.WAITING, {})]
    assert study.get_trials()[0].system_attrs["fixed_params"] == {"lr": base.lr, "weight_decay": base.weight_decay}
    # a small grid holding the baseline recipe's lr: queued first, run once even though the sampler draws it again
    _, trials, _ = search(make_folder(tmp_path / "data2"), tmp_path, grid="lr=0.002,0.003",
                          epochs=2, pruner="none")
    runs = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert trials[0].params["lr"] == 0.002 and sorted(t.params["lr"] for t in runs) == [0.002, 0.003]


def test_a_grid_of_only_the_recipes_point_runs_it_once(make_folder, tmp_path):
    # the queued first trial has no grid id; Optuna's GridSampler looked it up when it was the last point
    spec = SearchSpec(recipe="fast", data=str(make_folder(tmp_path / "data")), grid="lr=0.4;weight_decay=0.0005",
                      folds=2, steps=2, out=str(tmp_path / "s"))
    run_search(spec, quiet=True)
    trials = open_study(spec, spec.space()).get_trials()
    assert [(t.state, t.params) for t in trials] == [(TrialState.COMPLETE, {"lr": 0.4, "weight_decay": 0.0005})]
