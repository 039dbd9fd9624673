"""--optimizer muon: filter banks by Muon (airbench94_muon's split), everything else by Nesterov SGD."""
import math

import pytest
import torch
import torch.nn as nn

from cifarlab.classify import recipe_config, train
from cifarlab.classify.artifact import build_classifier
from cifarlab.classify.muon import FilterMuon, Muon, orthogonalised
from cifarlab.classify.trainer import Trainer, build_optimizer, init_from_data
from cifarlab.data import load_images
from cifarlab.errors import CifarlabError


@pytest.mark.parametrize("shape", [(32, 8, 3, 3), (128, 8, 1, 1)])   # wide and tall as matrices
def test_the_update_comes_out_orthogonalised_in_the_banks_shape(shape):
    update = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    update[0] *= 4                                   # directions far larger than the rest
    update[:, 0] *= 4
    raw = torch.linalg.svdvals(update.reshape(shape[0], -1))
    assert raw.max() / raw.min() > 4
    out = orthogonalised(update)
    assert out.shape == update.shape
    singular = torch.linalg.svdvals(out.reshape(shape[0], -1))
    # Muon's quintic pushes every singular value into about [0.5, 1.5]: towards 1, not onto it (airbench)
    assert singular.max() < 1.5 and singular.min() > 0.5, singular


def test_a_muon_step_follows_nesterov_and_keeps_the_bank_at_norm_sqrt_out():
    w = nn.Parameter(torch.randn(16, 4, 3, 3))
    optimizer = Muon([w], lr=0.1, momentum=0.6)
    grad = torch.randn_like(w)
    before = w.detach().clone()
    w.grad = grad.clone()
    optimizer.step()
    stepped = before - 0.1 * orthogonalised(grad + 0.6 * grad)   # buffer = grad after one step
    expected = stepped * math.sqrt(16) / stepped.norm()
    assert torch.allclose(w.detach(), expected, atol=1e-5)
    assert torch.equal(optimizer.state[w]["momentum_buffer"], grad)
    assert abs(w.detach().norm().item() - 4.0) < 1e-4


def tiny_trainer(folder, **given):
    config = recipe_config("fast", data=str(folder), model_args={"widths": "8-8-8"}, optimizer="muon",
                           logger="none", batch_size=8, **given)
    train_set = load_images(str(folder))
    model = build_classifier(config.model, config.model_args, train_set.classes, tta=config.tta)
    init_from_data(model, train_set.images)
    return Trainer(config, model, train_set, torch.device("cpu"))


def test_muon_takes_the_learning_filters_and_sgd_the_rest(tiny_folder):
    trainer = tiny_trainer(tiny_folder, epochs=1)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, FilterMuon)
    filters = {id(p) for p in optimizer.muon.param_groups[0]["params"]}
    others = {id(p) for g in optimizer.sgd.param_groups for p in g["params"]}
    learning = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert filters and not filters & others and filters | others == learning
    assert all(p.ndim == 4 for p in optimizer.muon.param_groups[0]["params"])
    whitening = trainer.model.net.whiten.weight            # fixed from the data: neither optimizer moves it
    assert not whitening.requires_grad and id(whitening) not in filters
    trainer.train_epoch()                                   # the schedule drives the filters' lr too
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(
        optimizer.muon.param_groups[0]["base_lr"] * optimizer.sgd.param_groups[0]["lr"]
        / optimizer.sgd.param_groups[0]["base_lr"])


def test_a_muon_run_resumes_with_its_momentum(tiny_folder, tmp_path):
    run = tmp_path / "run"
    config = recipe_config("fast", data=str(tiny_folder), model_args={"widths": "8-8-8"}, optimizer="muon",
                           logger="none", batch_size=8, epochs=1)
    train(config, out=str(run), quiet=True)
    state = torch.load(run / "last.pt", weights_only=True)["optimizer"]
    assert state["muon"]["state"] and state["sgd"]["state"]      # both momentum buffers were saved
    config.epochs = 2
    train(config, resume=str(run), quiet=True)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_muon_with_the_plateau_schedule_is_refused_in_one_line():
    with pytest.raises(CifarlabError, match="plateau works with adam, adamw and sgd, not muon"):
        recipe_config("fast", optimizer="muon", schedule="plateau")
    with pytest.raises(CifarlabError, match="--muon-lr must be a positive number"):
        recipe_config("fast", optimizer="muon", muon_lr=-1.0)


def test_a_model_without_filters_is_refused_for_muon():
    with pytest.raises(CifarlabError, match="no convolution filters"):
        build_optimizer(recipe_config("fast", optimizer="muon"), nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
