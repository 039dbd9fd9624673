import csv

import pytest

from cifarlab.classify.search import PRESETS, SearchRange, SearchSpec, grid_points, parse_grid, run_search
from cifarlab.errors import CifarlabError


def test_report_adam_preset_is_the_reports_24_settings_unpruned():
    spec = SearchSpec(grid="report-adam")
    points = grid_points(spec.space())
    assert len(points) == 24 and {p["optimizer"] for p in points} == {"adam"}
    assert spec.pruner_name() == "none" and spec.base_config().epochs == 2 and PRESETS["report-adam"].epochs == 2


def test_default_search_is_the_recipes_lr_and_weight_decay_pruned():
    spec = SearchSpec(recipe="fast")
    assert spec.space() == {"lr": [0.1, 0.2, 0.4, 0.8, 1.6], "weight_decay": [0.000125, 0.00025, 0.0005, 0.001, 0.002]}
    assert spec.pruner_name() == "halving" and spec.base_config().time_budget == 30
    full = SearchSpec(grid="lr-wd-full")
    assert full.space() == spec.space() and full.pruner_name() == "none"
    assert SearchSpec(recipe="fast", time_budget=5).base_config().time_budget == 5


def test_grid_and_range_parsing():
    space = parse_grid("lr=0.001,0.002; weight_decay=0..0.01; batch_size=32,64; augment=crop:2+flip,none")
    assert space["lr"] == [0.001, 0.002] and space["batch_size"] == [32, 64]
    assert space["weight_decay"] == SearchRange(0.0, 0.01)
    assert space["augment"] == ["crop:2,flip", "none"]
    assert parse_grid("lr=1e-4..1..log")["lr"].log


@pytest.mark.parametrize("grid,where", [
    ("lr=0.001,abc", "part 1 ('lr=0.001,abc'): 'abc' is not a number"),
    ("lr=0.1;weight_decay", "part 2 ('weight_decay')"),
    ("lr=0.1;;", "part 2"),
    ("colour=red", "'colour' cannot be searched"),
    ("lr=0.1,,0.2", "empty value"),
    ("lr=1..0.1", "low < high"),
])
def test_bad_grids_say_where(grid, where):
    with pytest.raises(CifarlabError) as e:
        parse_grid(grid)
    assert where in str(e.value)


def test_a_tiny_grid_search_records_every_trial_and_resumes(tiny_folder, tmp_path):
    spec = SearchSpec(recipe="baseline", data=str(tiny_folder), grid="lr=0.001,0.003;weight_decay=0,0.01;batch_size=8",
                      folds=2, epochs=1, pruner="none", out=str(tmp_path / "search"))
    report = run_search(spec, quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "search" / "trials.csv")))
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {(r["lr"], r["weight_decay"]) for r in rows} == {("0.001", "0.0"), ("0.001", "0.01"),
                                                           ("0.003", "0.0"), ("0.003", "0.01")}
    assert all(len(r["fold_accuracies"].split()) == 2 for r in rows)
    text = report.read_text()
    assert "Best:" in text and "±" in text and (tmp_path / "search" / "heatmap.png").is_file()
    run_search(spec, quiet=True)  # resuming a finished study runs nothing new
    assert len(list(csv.DictReader(open(tmp_path / "search" / "trials.csv")))) == 4


def test_a_dead_workers_trial_is_marked_failed_and_its_setting_runs_again(tiny_folder, tmp_path):
    from optuna.trial import TrialState

    from cifarlab.classify.search import HOST, open_study
    spec = SearchSpec(recipe="baseline", data=str(tiny_folder), grid="lr=0.001,0.003;batch_size=8", folds=2,
                      epochs=1, pruner="none", out=str(tmp_path / "search"))
    space = parse_grid(spec.grid)
    study = open_study(spec, space)
    orphan = study.ask()  # a worker that took a grid point, then was killed
    for name, values in space.items():
        orphan.suggest_categorical(name, values)
    orphan.set_user_attr("host", HOST)
    orphan.set_user_attr("pid", 2 ** 22 + 12345)  # above the default pid_max: never a live process
    run_search(spec, quiet=True)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE and retried[0].params == orphan.params
