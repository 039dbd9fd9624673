"""NaN stops with the best checkpoint intact; Ctrl-C saves; --resume continues."""
import json

import pytest
import torch

from cifarlab.classify import load_run, recipe_config, train
from cifarlab.classify.trainer import Trainer, TrainingDiverged


def config(data, **kw):
    return recipe_config("baseline", data=str(data), logger="none", batch_size=8, **kw)


def test_nan_stops_with_the_best_checkpoint_intact(tiny_folder, tmp_path, monkeypatch):
    validate = Trainer.validate

    def poison_after_first_epoch(self, val_set):
        row = validate(self, val_set)
        self.loss_fn = lambda logits, y: logits.sum() * float("nan")
        return row

    monkeypatch.setattr(Trainer, "validate", poison_after_first_epoch)
    with pytest.raises(TrainingDiverged, match="nan"):
        train(config(tiny_folder, epochs=3), out=str(tmp_path / "run"), quiet=True)
    ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert torch.isfinite(load_run(tmp_path / "run")(torch.rand(2, 3, 32, 32))).all()


def test_ctrl_c_saves_and_resume_continues(tiny_folder, tmp_path, monkeypatch):
    train_epoch = Trainer.train_epoch

    def interrupt_in_second_epoch(self, bar=None):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(self, bar)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_in_second_epoch)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config(tiny_folder, epochs=3), out=str(run), quiet=True)
    assert json.loads((run / "metrics.json").read_text())["stopped_by"] == "interrupted"
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    train(config(tiny_folder, epochs=3), resume=str(run), quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["stopped_by"] == "epochs"


def test_a_non_empty_run_folder_is_not_overwritten(trained_run):
    from cifarlab.errors import CifarlabError
    with pytest.raises(CifarlabError, match="already exists"):
        train(config(trained_run, epochs=1), out=str(trained_run), quiet=True)
