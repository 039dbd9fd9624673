"""The budget rule, shared by both trainers: a budget without --epochs is spent, --epochs still
caps, early stopping only when asked, and a budget shorter than one epoch is an error."""
import json

import pytest

from cifarlab.cli import main
from cifarlab.training.budget import Limits


def train(capsys, kind, data, out, *extra):
    code = main([kind, "train", "--data", str(data), "--out", str(out), "--logger", "none", *map(str, extra)])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text()), err


def test_limits_say_which_one_is_in_force():
    assert Limits.of(None, 60, 100).describe() == "limit: the clock, 60 s of training (no epoch cap)"
    assert Limits.of(None, None, 100).describe() == "limit: 100 epochs"
    assert "whichever comes first" in Limits.of(5, 60, 100).describe()
    assert Limits.of(None, 60, 100).planned_steps(10) is None and Limits.of(3, None, 100).planned_steps(10) == 30


@pytest.mark.parametrize("kind, extra", [("transform", []),                      # the default schedule (auto)
                                         ("transform", ["--schedule", "cosine"]),
                                         ("classify", ["--recipe", "baseline", "--schedule", "onecycle"])])
def test_a_budget_without_epochs_is_spent_and_the_schedule_anneals(capsys, tmp_path, make_folder, kind, extra):
    data = make_folder(tmp_path / "data", per_class=8)
    extra = [*extra, "--init", "random"] if kind == "transform" else extra  # not the exact start (it stops at once)
    metrics, err = train(capsys, kind, data, tmp_path / "run", "--time-budget", 4, *extra)
    assert "limit: the clock, 4 s of training (no epoch cap)" in err.splitlines()[0]
    assert metrics["stopped_by"] == "time budget"
    assert 4 <= metrics["train_seconds"] < 4.5
    history = json.loads((tmp_path / "run" / "config.json").read_text())
    assert history["epochs"] is None
    last_lr = _last_lr(tmp_path / "run")
    base_lr = 1e-3 if kind == "transform" else 0.002
    assert last_lr < 0.25 * base_lr    # set before the last step: within one step's share of the end
    if kind == "classify":
        assert metrics["epochs"] > 10     # the recipe's 10 epochs did not end the run


def _last_lr(run):
    import torch
    return torch.load(run / "last.pt", weights_only=True)["history"][-1]["lr"]


@pytest.mark.parametrize("kind", ["transform", "classify"])
def test_epochs_given_still_cap_a_budget(capsys, tmp_path, make_folder, kind):
    data = make_folder(tmp_path / "data", per_class=4)
    extra = ["--init", "random"] if kind == "transform" else []   # random: trains, not the operator at epoch 0
    metrics, err = train(capsys, kind, data, tmp_path / "run", "--time-budget", 1000, "--epochs", 2, *extra)
    assert "limits: 2 epochs or 1000 s" in err.splitlines()[0]
    assert metrics["epochs"] == 2 and metrics["stopped_by"] == "epochs"


def test_patience_given_still_stops_a_budgeted_transform_run_early(capsys, tmp_path, make_folder):
    data = make_folder(tmp_path / "data", per_class=4)
    metrics, err = train(capsys, "transform", data, tmp_path / "run", "--time-budget", 1000, "--patience", 1,
                         "--min-delta", 1, "--init", "random")
    assert metrics["stopped_by"].startswith("early stopping") and metrics["epochs"] == 2


@pytest.mark.parametrize("command", [["classify", "train"], ["transform", "train"], ["transform", "survey"],
                                     ["classify", "search"]])
@pytest.mark.parametrize("budget", ["inf", "nan", "0", "-5"])
def test_a_budget_that_is_not_a_finite_positive_number_is_refused_in_one_line(capsys, tmp_path, make_folder,
                                                                              command, budget):
    """An infinite budget would never anneal the schedule: it is refused like a negative one, before any work."""
    data = make_folder(tmp_path / "data", per_class=2)
    code = main([*command, "--data", str(data), "--out", str(tmp_path / "run"), "--time-budget", budget])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("error: --time-budget must be a finite positive number of seconds, got "), err
    assert not (tmp_path / "run").exists()
