import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F

from cifarlab.errors import CifarlabError
from cifarlab.pipeline import STEPS, Pipeline, ground_truth, parse_step

IMAGES = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))

# step text -> what torchvision gives for it, written out by hand
TORCHVISION = {
    "resize:28x28": lambda x: F.resize(x, [28, 28], antialias=True),
    "resize:20x24:bicubic": lambda x: F.resize(x, [20, 24], interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
    "center_crop:24": lambda x: F.center_crop(x, [24, 24]),
    "pad:2": lambda x: F.pad(x, [2]),
    "pad:1x2x3x4:reflect": lambda x: F.pad(x, [1, 2, 3, 4], padding_mode="reflect"),
    "grayscale": lambda x: F.rgb_to_grayscale(x, 1),
    "grayscale:3": lambda x: F.rgb_to_grayscale(x, 3),
    "hflip": F.hflip,
    "vflip": F.vflip,
    "rotate:90": lambda x: F.rotate(x, 90),
    "rotate:30:bilinear": lambda x: F.rotate(x, 30, interpolation=v2.InterpolationMode.BILINEAR),
    "gaussian_blur:5:1.5": lambda x: F.gaussian_blur(x, [5, 5], [1.5, 1.5]),
    "adjust_brightness:1.3": lambda x: F.adjust_brightness(x, 1.3),
    "adjust_contrast:1.4": lambda x: F.adjust_contrast(x, 1.4),
    "adjust_saturation:0.5": lambda x: F.adjust_saturation(x, 0.5),
    "adjust_sharpness:2": lambda x: F.adjust_sharpness(x, 2.0),
    "adjust_gamma:0.7": lambda x: F.adjust_gamma(x, 0.7),
    "adjust_hue:0.1": lambda x: F.adjust_hue(x, 0.1),
    "invert": F.invert,
    "solarize:0.6": lambda x: F.solarize(x, 0.6),
    "autocontrast": F.autocontrast,
    "normalize:0.5/0.4/0.3:0.2": lambda x: F.normalize(x, [0.5, 0.4, 0.3], [0.2]),
}


@pytest.mark.parametrize("text", sorted(TORCHVISION))
def test_each_step_matches_torchvision(text):
    assert torch.equal(parse_step(text)(IMAGES), TORCHVISION[text](IMAGES))


def test_every_registered_step_is_tested():
    assert {t.split(":")[0] for t in TORCHVISION} == set(STEPS)


def test_default_pipeline_is_the_reference_transforms():
    pipeline = Pipeline.parse()
    reference = torch.stack([F.vflip(F.hflip(v2.Grayscale()(v2.Resize((28, 28), antialias=True)(image))))
                             for image in IMAGES])
    assert pipeline.spec == "resize:28x28,grayscale,hflip,vflip"
    assert torch.equal(pipeline(IMAGES), reference)
    assert torch.equal(pipeline.compose()(IMAGES), reference)
    assert pipeline.output_shape() == (1, 28, 28)


def test_ground_truth_is_batched_pipeline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path))
    pipeline = Pipeline.parse()
    first = ground_truth(IMAGES, pipeline)
    assert torch.equal(first, pipeline(IMAGES))
    assert len(list((tmp_path / "ground-truth").glob("*.pt"))) == 1
    assert torch.equal(ground_truth(IMAGES, pipeline), first)


def test_linearity_and_quarter_turns_are_detected():
    assert Pipeline.parse().is_linear()
    assert not Pipeline.parse("adjust_gamma:0.7,resize:28x28").is_linear()
    assert not Pipeline.parse("solarize:0.5").is_linear()
    # a blur first leaves noise grey: contrast after it clamps only on images with large areas
    assert not Pipeline.parse("gaussian_blur:5:1.0,adjust_contrast:1.4,resize:28x28").is_linear()
    assert Pipeline.parse("rotate:90,hflip").transposes
    assert not Pipeline.parse("rotate:90,rotate:-90").transposes


@pytest.mark.parametrize("text, message", [
    ("blur", "unknown pipeline step 'blur'; valid steps: adjust_brightness"),
    ("random_crop:24", "is random: a network can only learn a deterministic map"),
    ("color_jitter", "is random"),
    ("resize:28y", "size must be an integer"),
    ("resize", "takes 1 to 2 argument(s), got 0"),
    ("gaussian_blur:4", "kernel size must be odd"),
    ("hflip:1", "takes 0 argument(s)"),
    ("adjust_hue:0.9", "must be in [-0.5, 0.5]"),
    ("resize:28x28,,vflip", "empty pipeline step"),
])
def test_bad_steps_get_one_line_errors(text, message):
    with pytest.raises(CifarlabError) as error:
        Pipeline.parse(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_pipeline_that_cannot_run_on_the_input_is_refused():
    with pytest.raises(CifarlabError, match="cannot run on images"):
        Pipeline.parse("pad:100:reflect").output_shape()
