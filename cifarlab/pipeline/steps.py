"""The registry of deterministic pipeline steps, each a thin wrapper over
`torchvision.transforms.v2.functional`.

Syntax of one step: ``name`` or ``name:arg:arg``; a size is ``HxW`` (or one
number for a square), a per-channel list is ``a/b/c``. Examples:
``resize:28x28``, ``rotate:90``, ``gaussian_blur:5:1.5``,
``normalize:0.5/0.5/0.5:0.25/0.25/0.25``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from ..errors import CifarlabError

STEPS: dict[str, "StepSpec"] = {}

# Names a user may reach for that are random by nature: refused with a reason.
RANDOM_NAMES = {
    "random_crop", "random_resized_crop", "random_horizontal_flip", "random_vertical_flip",
    "random_rotation", "random_affine", "random_perspective", "random_erasing", "random_grayscale",
    "random_invert", "random_posterize", "random_solarize", "random_adjust_sharpness",
    "random_autocontrast", "random_equalize", "random_photometric_distort", "random_zoom_out",
    "random_apply", "random_choice", "random_order", "color_jitter", "gaussian_noise",
    "elastic_transform", "auto_augment", "rand_augment", "trivial_augment_wide", "augmix",
}


@dataclass(frozen=True)
class StepSpec:
    name: str
    parse: Callable[[list[str]], dict]
    apply: Callable[..., torch.Tensor]
    usage: str
    transform: Callable[..., object] | None = None  # builds the v2 transform object, where one exists
    transposes: Callable[[dict], bool] = field(default=lambda kw: False)
    uses_extremes: bool = False  # the output depends on each image's min/max (autocontrast)
    spatial: bool = False  # moves or mixes pixels, the same way in every channel (the rest act per pixel)


@dataclass(frozen=True)
class Step:
    """A parsed step: a name and its keyword arguments."""
    spec: StepSpec
    kwargs: dict
    text: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec.apply(x, **self.kwargs)

    @property
    def name(self) -> str:
        return self.spec.name

    def transform_object(self):
        """The torchvision v2 transform object for this step, or its functional call where
        torchvision has no deterministic object (the flips)."""
        if self.spec.transform is not None:
            return self.spec.transform(**self.kwargs)
        return functools.partial(self.spec.apply, **self.kwargs) if self.kwargs else self.spec.apply


def register_step(name, usage, transform=None, transposes=None, uses_extremes=False, spatial=False):
    def wrap(parse_and_apply):
        parse, apply = parse_and_apply()
        STEPS[name] = StepSpec(name, parse, apply, usage, transform,
                               transposes or (lambda kw: False), uses_extremes, spatial)
        return parse_and_apply
    return wrap


# ---- argument parsing -------------------------------------------------------

MAX_SIDE = 256  # outputs larger than this from 32x32 images only cost memory (the ground truth is kept whole)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {text!r}")
    return value


def _int(text: str, what: str, minimum: int = 1, maximum: int = MAX_SIDE) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be from {minimum} to {maximum}, got {value}")
    return value


def _size(text: str, what: str = "size") -> list[int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"{what} must be HxW or N, got {text!r}")
    return [_int(p, what) for p in parts]


def _floats(text: str, what: str) -> list[float]:
    return [_number(p, what) for p in text.split("/")]


def _expect(args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise ValueError(f"takes {want} argument(s), got {len(args)}")


def _interp(text: str) -> InterpolationMode:
    try:
        return InterpolationMode(text.lower())
    except ValueError:
        valid = ", ".join(m.value for m in InterpolationMode)
        raise ValueError(f"interpolation must be one of {valid}, got {text!r}") from None


# ---- the steps ----------------------------------------------------------------

@register_step("resize", "resize:HxW[:bilinear|nearest|bicubic] (antialiased)", spatial=True,
               transform=lambda size, interpolation: v2.Resize(size, interpolation=interpolation, antialias=True))
def _resize():
    def parse(args):
        _expect(args, 1, 2)
        return {"size": _size(args[0]),
                "interpolation": _interp(args[1]) if len(args) > 1 else InterpolationMode.BILINEAR}
    return parse, lambda x, size, interpolation: F.resize(x, size, interpolation=interpolation, antialias=True)


@register_step("center_crop", "center_crop:HxW", spatial=True, transform=lambda size: v2.CenterCrop(size))
def _center_crop():
    def parse(args):
        _expect(args, 1, 1)
        return {"size": _size(args[0])}
    return parse, lambda x, size: F.center_crop(x, size)


@register_step("pad", "pad:N or pad:LxTxRxB [:constant|edge|reflect|symmetric]", spatial=True,
               transform=lambda padding, padding_mode: v2.Pad(padding, padding_mode=padding_mode))
def _pad():
    def parse(args):
        _expect(args, 1, 2)
        parts = args[0].lower().split("x")
        if len(parts) not in (1, 2, 4):
            raise ValueError(f"padding must be N, HxV or LxTxRxB, got {args[0]!r}")
        mode = args[1] if len(args) > 1 else "constant"
        if mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"padding mode must be constant, edge, reflect or symmetric, got {mode!r}")
        return {"padding": [_int(p, "padding", 0, MAX_SIDE // 2) for p in parts], "padding_mode": mode}
    return parse, lambda x, padding, padding_mode: F.pad(x, padding, padding_mode=padding_mode)


@register_step("grayscale", "grayscale[:1|3] (output channels)",
               transform=lambda num_output_channels: v2.Grayscale(num_output_channels))
def _grayscale():
    def parse(args):
        _expect(args, 0, 1)
        n = _int(args[0], "channels") if args else 1
        if n not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {n}")
        return {"num_output_channels": n}
    return parse, lambda x, num_output_channels: F.rgb_to_grayscale(x, num_output_channels)


def _no_args(fn):
    def parse(args):
        _expect(args, 0, 0)
        return {}
    return parse, fn


@register_step("hflip", "hflip", spatial=True)
def _hflip():
    return _no_args(F.hflip)


@register_step("vflip", "vflip", spatial=True)
def _vflip():
    return _no_args(F.vflip)


@register_step("rotate", "rotate:DEGREES[:nearest|bilinear] (counter-clockwise, same size)", spatial=True,
               transform=lambda angle, interpolation: v2.RandomRotation((angle, angle), interpolation=interpolation),
               transposes=lambda kw: kw["angle"] % 180 == 90)
def _rotate():
    def parse(args):
        _expect(args, 1, 2)
        return {"angle": _number(args[0], "angle"),
                "interpolation": _interp(args[1]) if len(args) > 1 else InterpolationMode.NEAREST}

    return parse, lambda x, angle, interpolation: F.rotate(x, angle, interpolation=interpolation)


@register_step("gaussian_blur", "gaussian_blur:KERNEL[:SIGMA] (odd kernel)", spatial=True,
               transform=lambda kernel_size, sigma: v2.GaussianBlur(kernel_size, sigma=sigma))
def _gaussian_blur():
    def parse(args):
        _expect(args, 1, 2)
        k = _int(args[0], "kernel size", 1, 63)
        if k % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {k}")
        sigma = _number(args[1], "sigma") if len(args) > 1 else 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        if not 0 < sigma <= 100:
            raise ValueError(f"sigma must be in (0, 100], got {sigma}")
        return {"kernel_size": [k, k], "sigma": [sigma, sigma]}
    return parse, lambda x, kernel_size, sigma: F.gaussian_blur(x, kernel_size, sigma)


def _factor_step(name, fn, what, low=0.0, high=None, spatial=False):
    @register_step(name, f"{name}:{what.upper()}", spatial=spatial)
    def _make():
        def parse(args):
            _expect(args, 1, 1)
            value = _number(args[0], what)
            if value < low or (high is not None and value > high):
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"{what} must be {bound}, got {value}")
            return {what: value}
        return parse, lambda x, **kw: fn(x, *kw.values())
    return _make


_factor_step("adjust_brightness", F.adjust_brightness, "brightness_factor", high=100.0)
_factor_step("adjust_contrast", F.adjust_contrast, "contrast_factor", high=100.0)
_factor_step("adjust_saturation", F.adjust_saturation, "saturation_factor", high=100.0)
_factor_step("adjust_sharpness", F.adjust_sharpness, "sharpness_factor", high=100.0, spatial=True)
_factor_step("adjust_hue", F.adjust_hue, "hue_factor", low=-0.5, high=0.5)
_factor_step("solarize", F.solarize, "threshold", low=0.0, high=1.0)


@register_step("adjust_gamma", "adjust_gamma:GAMMA[:GAIN]")
def _adjust_gamma():
    def parse(args):
        _expect(args, 1, 2)
        gamma = _number(args[0], "gamma")
        if not 0 < gamma <= 100:
            raise ValueError(f"gamma must be in (0, 100], got {gamma}")
        gain = _number(args[1], "gain") if len(args) > 1 else 1.0
        if gain < 0:
            raise ValueError(f"gain must be >= 0, got {gain}")
        return {"gamma": gamma, "gain": gain}
    return parse, lambda x, gamma, gain: F.adjust_gamma(x, gamma, gain)


@register_step("invert", "invert")
def _invert():
    return _no_args(F.invert)


@register_step("autocontrast", "autocontrast", uses_extremes=True)
def _autocontrast():
    return _no_args(F.autocontrast)


@register_step("normalize", "normalize:MEAN:STD (each a/b/c or one number)",
               transform=lambda mean, std: v2.Normalize(mean, std))
def _normalize():
    def parse(args):
        _expect(args, 2, 2)
        mean, std = _floats(args[0], "mean"), _floats(args[1], "std")
        if any(s <= 0 for s in std):
            raise ValueError("std must be positive")
        if len(mean) not in (1, 3) or len(std) not in (1, 3):
            raise ValueError("mean and std take one value or three (a/b/c)")
        return {"mean": mean, "std": std}
    return parse, lambda x, mean, std: F.normalize(x, mean, std)


def valid_steps() -> str:
    return ", ".join(sorted(STEPS))


def parse_step(text: str) -> Step:
    """Parse ``name[:arg...]`` into a Step, with a one-line error that lists the valid steps."""
    text = text.strip()
    name, *args = text.split(":")
    name = name.strip().lower()
    if not name:
        raise CifarlabError(f"empty pipeline step; valid steps: {valid_steps()}")
    if name in RANDOM_NAMES or name.startswith("random"):
        raise CifarlabError(
            f"pipeline step {name!r} is random: a network can only learn a deterministic map; "
            f"use a fixed step instead (valid steps: {valid_steps()})")
    if name not in STEPS:
        raise CifarlabError(f"unknown pipeline step {name!r}; valid steps: {valid_steps()}")
    spec = STEPS[name]
    try:
        kwargs = spec.parse([a.strip() for a in args])
    except ValueError as e:
        raise CifarlabError(f"pipeline step {text!r}: {e} (usage: {spec.usage})") from None
    return Step(spec, kwargs, text)
