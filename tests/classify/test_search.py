import csv

import pytest

from cifarlab.classify.search import DEFAULT_GRID, SearchRange, SearchSpec, grid_points, parse_grid, run_search
from cifarlab.errors import CifarlabError


def test_default_grid_is_the_reports_24_settings():
    points = grid_points(parse_grid(DEFAULT_GRID))
    assert len(points) == 24 and {p["optimizer"] for p in points} == {"adam"}


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
                      folds=2, epochs=1, out=str(tmp_path / "search"))
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
                      epochs=1, out=str(tmp_path / "search"))
    space = parse_grid(spec.grid)
    study = open_study(spec, space)
    orphan = study.ask()  # a worker that took a grid point, then was killed
    for name, values in space.items():
        orphan.suggest_categorical(name, values)
    orphan.set_user_attr("host", HOST)
    orphan.set_user_attr("pid", 2 ** 22 + 12345)  # above the default pid_max: never a live process
    run_search(spec, quiet=True)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2
