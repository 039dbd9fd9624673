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


@pytest.mark.parametrize("spec, form", [("resize:28x28,grayscale,hflip,vflip", 1),
                                        ("rotate:90,resize:20x24,grayscale", 1),        # transposed, rank 1
                                        ("rotate:30,resize:28x28,grayscale,hflip,vflip", "dense"),
                                        ("rotate:45:bilinear,pad:2:reflect", "dense"),
                                        ("gaussian_blur:5,center_crop:24,invert", 1)])
def test_linear_plan_holds_every_linear_pipeline(spec, form):
    """Any angle of rotation, not only separable pipelines: Kronecker terms where few suffice,
    else the dense spatial matrix (a rotation needs hundreds of terms)."""
    from cifarlab.models.exact import linear_plan
    pipeline = Pipeline.parse(spec)
    plan = linear_plan(pipeline)
    assert plan.error < 1e-9 and plan.spatial.exact
    assert (plan.spatial.rank or "dense") == form
    net = plan.build((3, 32, 32), pipeline.output_shape())
    with torch.no_grad():
        assert (net(X) - pipeline(X)).abs().max() < 1e-5


def test_kronecker_plan_finds_the_rank_and_says_what_a_forced_rank_misses():
    from cifarlab.models.exact import linear_plan, spatial_plan
    sharpen = spatial_plan(Pipeline.parse("adjust_sharpness:2.0,resize:28x28,grayscale"))  # its border: 3 terms
    assert sharpen.rank == 3 and sharpen.exact
    forced = linear_plan(Pipeline.parse("rotate:30,resize:28x28,grayscale"), rank=1).spatial
    assert forced.rank == 1 and forced.error > 0.5 and not forced.exact
    assert "needs more than" in forced.describe()
    assert spatial_plan(Pipeline.parse("autocontrast,adjust_hue:0.1")) is None   # no spatial step


def test_dense_sepnet_holds_a_whole_spatial_operator():
    dense = create_model("sepnet", in_shape=(3, 32, 32), out_shape=(1, 28, 28), dense=True, hidden=4)
    assert dense(X).shape == (5, 1, 28, 28)
    assert dense.spatial.shape == (28 * 28, 32 * 32) and not hasattr(dense, "left")
    with pytest.raises(CifarlabError, match="neither rank nor transpose"):
        create_model("sepnet", dense=True, rank=2)


def test_stretch_is_torchvision_autocontrast():
    import torchvision.transforms.v2.functional as F
    from cifarlab.models.separable import stretch_contrast
    x = X.clone()
    x[0, 1] = 0.3                     # a flat channel is left as it is
    assert torch.equal(stretch_contrast(x), F.autocontrast(x))


@pytest.mark.parametrize("spec, steps", [
    ("adjust_brightness:1.3,resize:28x28", 1), ("adjust_gamma:0.7,solarize:0.3,grayscale", 2),
    ("invert,adjust_gamma:0.5:1.2,adjust_contrast:1.4", 2),
    ("adjust_contrast:1.4", 0), ("adjust_saturation:1.6", 0), ("adjust_hue:0.1", 0),   # they mix channels
    ("resize:28x28,adjust_gamma:0.7", 0), ("autocontrast,adjust_gamma:0.7", 0),        # not in front
    ("resize:28x28,grayscale,hflip,vflip", 0),                                         # linear: the operator holds it
])
def test_leading_per_value_steps_are_one_exact_table_per_channel(spec, steps):
    """The curve is found by probing: on 8-bit images it gives the leading steps' own output."""
    from cifarlab.models.separable import apply_curve
    pipeline = Pipeline.parse(spec)
    table, found = pipeline.leading_curve()
    assert found == steps and (table is None) == (steps == 0)
    if steps:
        x = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float() / 255
        head = Pipeline(pipeline.steps[:steps])
        assert table.shape == (3, 4081) and (apply_curve(x, table) - head(x)).abs().max() < 1e-6
        between = apply_curve(torch.full((1, 3, 1, 1), 0.5 / 4080), table)   # off the levels: halfway
        assert torch.allclose(between.view(3), (table[:, 0] + table[:, 1]) / 2)


@pytest.mark.parametrize("spec, form", [("adjust_contrast:1.4", True), ("adjust_saturation:1.6", True),
                                        ("adjust_brightness:0.6", True), ("adjust_hue:0.1", False),
                                        ("adjust_gamma:0.7", False), ("resize:28x28", False)])
def test_torchvisions_blends_are_fitted_exactly(spec, form):
    """brightness, saturation and contrast are clamp(A·x + B·mean(x) + b): fitted, they agree with
    torchvision to float precision on images they were not fitted on; other steps are refused."""
    from cifarlab.models.separable import clamped_affine
    pipeline = Pipeline.parse(spec)
    table = pipeline.leading_clamped_affine()
    assert (table is not None) == form
    if form:
        x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.3
        assert (clamped_affine(x, table) - pipeline(x)).abs().max() < 1e-5


@pytest.mark.parametrize("spec, rank", [("adjust_sharpness:2.0,resize:28x28", 3), ("adjust_sharpness:0.5", None),
                                        ("rotate:30", None), ("adjust_gamma:0.7", None)])
def test_a_leading_sharpness_is_its_spatial_operator_then_the_clamp(spec, rank):
    """sharpness 2.0 overshoots and clamps: probed, it is 3 Kronecker terms then the clamp, equal to
    torchvision's on random images; 0.5 never clamps (linear: the operator holds it), rotate is
    linear, gamma does not move pixels."""
    from cifarlab.models.exact import clamped_spatial_plan
    from cifarlab.models.separable import spatial_front
    pipeline = Pipeline.parse(spec)
    plan = clamped_spatial_plan(pipeline)
    assert (plan and plan.rank) == rank
    if rank:
        out = spatial_front(X, plan.left.float(), plan.right.float())
        assert (out - Pipeline(pipeline.steps[:1])(X)).abs().max() < 1e-5


@pytest.mark.parametrize("spec, steps, dense", [("rotate:30:bilinear,adjust_gamma:0.7,resize:28x28", 1, True),
                                               ("gaussian_blur:5:1.0,hflip,adjust_contrast:1.4", 2, False),
                                               ("resize:28x28,adjust_gamma:0.7", 1, False),  # the rest is 28x28
                                               ("rotate:30,resize:28x28", 0, None)])         # nothing non-linear after
def test_pixels_moved_before_a_non_linear_step_are_moved_in_front(spec, steps, dense):
    from cifarlab.models.exact import spatial_front_plan
    from cifarlab.models.separable import spatial_front
    pipeline = Pipeline.parse(spec)
    found = spatial_front_plan(pipeline)
    assert (found[1] if found else 0) == steps
    if steps:
        plan, _, clamp = found
        assert (plan.rank is None) == dense and not clamp
        out = (spatial_front(X, dense=plan.operator.float(), clamp=False) if dense else
               spatial_front(X, plan.left.float(), plan.right.float(), clamp=False))
        assert (out - Pipeline(pipeline.steps[:steps])(X)).abs().max() < 1e-5


@pytest.mark.parametrize("spec, steps", [
    ("adjust_hue:0.1,resize:28x28", 1), ("adjust_hue:-0.3,invert,grayscale:3,adjust_hue:0.2", 4),
    ("adjust_hue:0.1,solarize:0.5", 1), ("adjust_hue:0.1,adjust_gamma:0.7", 1),   # then the curve, exact
    ("adjust_hue:0.1,adjust_saturation:1.6", 1),                                 # then the blend, exact
    ("adjust_hue:0.1,grayscale,hflip", 1),                                 # grayscale to one channel stays behind
    ("adjust_saturation:1.6", 1),                                          # the pixel's own grey: per pixel
    ("adjust_contrast:1.4,adjust_hue:0.1", 0), ("autocontrast,adjust_hue:0.1", 0),   # the image's mean, extremes
    ("resize:28x28,adjust_hue:0.1", 0), ("grayscale:1,adjust_gamma:0.7", 0),        # moves pixels; 3 -> 1 channel
    ("grayscale,hflip", 0),                                                          # linear: the operator holds it
])
def test_leading_colour_steps_are_one_table_over_a_lattice_of_colours(spec, steps):
    """Found by probing: steps that map each pixel's colour alone, interpolated trilinearly between
    65³ colours: on random 8-bit colours (more saturated than photos) within 1e-2, PSNR over 50 dB."""
    from cifarlab.models.separable import apply_color
    pipeline = Pipeline.parse(spec)
    table, found = pipeline.leading_color_map()
    assert found == steps and (table is None) == (steps == 0)
    if steps:
        x = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float() / 255
        error = apply_color(x, table) - Pipeline(pipeline.steps[:steps])(x)
        assert table.shape == (3, 65, 65, 65) and error.abs().max() < 1e-2
        assert -10 * torch.log10(error.pow(2).mean()) > 50
        corner = torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)       # r=1, g=0, b=1/2 lies on a node
        assert torch.allclose(apply_color(corner, table).view(3), table[:, 64, 0, 32])


def test_pixels_moved_then_sharpened_are_one_operator_then_the_clamp():
    """rotate, then sharpness: the sharpness's operator times the rotation's, then the clamp, so the
    gamma after it is the curve (the survey chain had been learned: 43.0 dB in 300 s)."""
    from cifarlab.models.exact import spatial_front_plan
    from cifarlab.models.separable import spatial_front
    pipeline = Pipeline.parse("rotate:30:bilinear,adjust_sharpness:2.0,adjust_gamma:0.7,resize:28x28")
    plan, steps, clamp = spatial_front_plan(pipeline)
    assert steps == 2 and clamp and plan.rank is None
    out = spatial_front(X, dense=plan.operator.float(), clamp=True)
    assert (out - Pipeline(pipeline.steps[:2])(X)).abs().max() < 1e-5


def test_the_fronts_run_in_the_order_recorded():
    """`fronts` orders the exact fronts; a name the net does not hold, or twice, is refused."""
    net = create_model("sepnet", color=True, curve=True, fronts="color,curve").eval()
    assert net.front_order == ("color", "curve")
    with torch.no_grad():
        net.curve.copy_(net.curve.flip(1))                       # invert; the colour table stays the identity
        net.color_table.copy_(net.color_table.clamp(max=0.5))    # then clamp at 1/2
    from cifarlab.models.separable import apply_color, apply_curve
    expected = apply_curve(apply_color(X, net.color_table), net.curve)
    assert torch.allclose(net.fronts(X), expected, atol=1e-6)
    assert not torch.allclose(expected, apply_color(apply_curve(X, net.curve), net.color_table))
    assert create_model("sepnet", color=True, curve=True).front_order == ("curve", "color")   # no order: the old one
    for fronts in ("color,spatial", "color,color"):
        with pytest.raises(CifarlabError, match="fronts names"):
            create_model("sepnet", color=True, fronts=fronts)


@pytest.mark.parametrize("chain, fronts, size", [
    ("adjust_sharpness:2.0,rotate:30,adjust_hue:0.1", "spatial,spatial2,color", None),
    ("adjust_sharpness:2.0,pad:4:reflect,adjust_gamma:0.7", "spatial,spatial2,curve", (40, 40)),
    ("adjust_saturation:1.6,adjust_contrast:1.4,adjust_gamma:0.7", "affine,affine2,curve", None),
    ("resize:24x24,adjust_gamma:0.7", "spatial,curve", (24, 24)),
    ("grayscale:3,adjust_contrast:1.4,rotate:30:bilinear", "affine", None),
    ("adjust_gamma:0.7,gaussian_blur:3,solarize:0.3", "curve,spatial,curve2", None),
])
def test_chains_of_fronts_leave_a_linear_rest(chain, fronts, size):
    """Fronts follow the chain: a second spatial front or blend where one is not enough, a spatial
    front that resizes or pads (the rest is sized for what it hands on), and a blend together with
    the linear steps before it. What is left is linear: the probed operator holds it."""
    from cifarlab.transform.config import TransformConfig
    from cifarlab.transform.loop import exact_front, rest_shape
    front, rest, tables = exact_front(TransformConfig(), Pipeline.parse(chain + ",resize:28x28,grayscale"), (3, 32, 32))
    assert front["fronts"] == fronts and rest.is_linear(rest_shape(front, (3, 32, 32)))
    assert rest_shape(front, (3, 32, 32))[1:] == (size or (32, 32))
    net = create_model("sepnet", out_shape=(1, 28, 28), **front).eval()
    with torch.no_grad():   # the colour table is a weight
        for name, table in tables.items():
            getattr(net, name).copy_(table)
    assert net(X).shape == (5, 1, 28, 28)


def test_after_a_front_that_leaves_0_1_no_table_or_fit_is_used():
    """normalize's curve hands on values in [-2, 2]: a blend fitted on [0, 1] would clamp where
    grayscale does not, and a curve or colour table is defined on [0, 1] only; so they are not
    used, and the fronts that are do what the steps do."""
    from cifarlab.transform.config import TransformConfig
    from cifarlab.transform.loop import exact_front
    pipeline = Pipeline.parse("normalize:0.5:0.25,grayscale:3,solarize:0.5,resize:28x28,grayscale")
    front, rest, tables = exact_front(TransformConfig(), pipeline, (3, 32, 32))
    assert front["fronts"] == "curve" and rest.spec.startswith("grayscale:3,solarize:0.5")
    net = create_model("sepnet", out_shape=(1, 28, 28), **front).eval()
    net.curve.copy_(tables["curve"])
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(4)).float() / 255
    assert (net.fronts(x) - Pipeline(pipeline.steps[:1])(x)).abs().max() < 1e-5
