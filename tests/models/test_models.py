import pytest
import torch

from cifarlab.errors import CifarlabError
from cifarlab.models import create_model, list_models, parse_model_args
from cifarlab.models.exact import exact_separable_net, probe_operator
from cifarlab.pipeline import Pipeline

X = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["conv2", "fc", "conv4", "convpool", "sepnet"])
def test_every_reference_model_maps_cifar_to_28x28_gray(name):
    model = create_model(name, in_shape=(3, 32, 32), out_shape=(1, 28, 28)).eval()
    assert model(X).shape == (5, 1, 28, 28)


def test_registry_lists_models_and_refuses_unknown_names():
    assert {"conv2", "fc", "conv4", "convpool", "sepnet"} <= set(list_models())
    with pytest.raises(CifarlabError, match="unknown transform model 'resnet'; valid models: conv2"):
        create_model("resnet")
    with pytest.raises(CifarlabError, match="has no option depth"):
        create_model("sepnet", depth=3)
    with pytest.raises(CifarlabError, match="maps 32x32 to 28x28"):
        create_model("conv2", in_shape=(3, 32, 32), out_shape=(1, 16, 16))


def test_model_args_parse_types():
    assert parse_model_args("hidden=32, act=relu,transpose=true,x=0.5") == {
        "hidden": 32, "act": "relu", "transpose": True, "x": 0.5}
    with pytest.raises(CifarlabError, match="name=value"):
        parse_model_args("hidden")


@pytest.mark.parametrize("spec", ["resize:28x28,grayscale,hflip,vflip", "rotate:90,resize:20x24,grayscale",
                                  "gaussian_blur:5,center_crop:24,invert", "pad:2,resize:30,hflip"])
def test_exact_operator_reproduces_linear_pipelines(spec):
    pipeline = Pipeline.parse(spec)
    with torch.no_grad():
        assert (exact_separable_net(pipeline)(X) - pipeline(X)).abs().max() < 1e-5


def test_exact_operator_is_refused_where_none_exists():
    with pytest.raises(CifarlabError, match="not linear"):
        probe_operator(Pipeline.parse("adjust_gamma:0.7"))
    with pytest.raises(CifarlabError, match="not separable"):
        exact_separable_net(Pipeline.parse("rotate:30"))


def test_sepnet_variants_shapes():
    wide = create_model("sepnet", in_shape=(3, 32, 32), out_shape=(3, 24, 20), hidden=8, rank=2, transpose=True)
    assert wide(X).shape == (5, 3, 24, 20)
    # the linear default stays tiny: channel mix + row and column operators + bias
    assert sum(p.numel() for p in create_model("sepnet").parameters()) == 3 + 28 * 32 * 2 + 1


def test_range_context_adds_weights_only_when_asked():
    from cifarlab.models.separable import SeparableNet
    mean = SeparableNet((3, 32, 32), (3, 28, 28), hidden=4)
    wide = SeparableNet((3, 32, 32), (3, 28, 28), hidden=4, context="range")
    assert not any("range_context" in k for k in mean.state_dict())  # older checkpoints still load
    assert {k for k in wide.state_dict() if "range_context" in k} == {"pre.range_context.weight",
                                                                      "post.range_context.weight"}
    x = torch.rand(2, 3, 32, 32)
    assert wide(x).shape == (2, 3, 28, 28)
    program = torch.export.export(wide.eval(), (x,))
    assert torch.allclose(program.module()(x), wide(x))
    with pytest.raises(ValueError, match="context must be one of mean, range"):
        SeparableNet(hidden=4, context="max")
