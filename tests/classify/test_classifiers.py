import pytest
import torch

import cifarlab.classify  # noqa: F401  (registers the classifiers)
from cifarlab.errors import CifarlabError
from cifarlab.models import create_model, list_models

SMALL_ARGS = {"deep_cnn": {"widths": "8-16-16-16-16"}, "resnet_bottleneck": {"widths": "4-8", "blocks": 1},
              "fastnet": {"widths": "8-8-16"}}


@pytest.mark.parametrize("name", list_models("classify"))
def test_every_classifier_maps_a_batch_to_logits(name):
    net = create_model(name, task="classify", num_classes=10, **SMALL_ARGS.get(name, {}))
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_registry_holds_the_issue_models():
    assert {"baseline_cnn", "deep_cnn", "resnet_bottleneck", "fastnet", "resnet18_tv"} <= set(list_models("classify"))


def test_baseline_has_the_reports_size():
    assert 22_000 < sum(p.numel() for p in create_model("baseline_cnn", task="classify").parameters()) < 24_000


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "gelu"])
def test_deep_cnn_takes_each_activation(activation):
    net = create_model("deep_cnn", task="classify", widths="8-8", activation=activation)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(CifarlabError, match="leaky_relu"):
        create_model("deep_cnn", task="classify", activation="swish")


def test_fastnet_whitening_decorrelates_patches():
    net = create_model("fastnet", task="classify", widths="8-8-8")
    images = torch.randn(64, 3, 1, 32).repeat(1, 1, 32, 1) + 0.3 * torch.randn(64, 3, 32, 32)  # strongly correlated
    net.init_from_data(images)
    out = net.whiten(images) - net.whiten.bias.view(1, -1, 1, 1)
    half = out[:, : out.shape[1] // 2].permute(0, 2, 3, 1).reshape(-1, out.shape[1] // 2)
    covariance = torch.cov(half.T)
    assert torch.allclose(covariance, torch.eye(len(covariance)), atol=0.05)
