"""A Pipeline is an ordered list of deterministic steps, applied to whole batches."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torchvision
import torchvision.transforms.v2 as v2

from ..errors import CifarlabError
from .steps import Step, parse_step

DEFAULT_PIPELINE = "resize:28x28,grayscale,hflip,vflip"
# Levels of a curve's table: every 8-bit value (k/255 = 16k/4080) and 15 between each two, for
# inputs a rotation or a blur moved off them (rotate:30 then gamma 0.7: 88.5 dB with 256 levels).
CURVE_LEVELS = 255 * 16 + 1
# Nodes per axis of a colour table (`leading_color_map`): adjust_hue:0.1 then the default pipeline,
# interpolated trilinearly, reached 46.6 dB on held-out images with 17, 54.5 with 33, 63.0 with 65
# and 71.7 with 129 (3 x 65^3 floats: 3.3 MB).
COLOR_NODES = 65


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, spec: str = DEFAULT_PIPELINE) -> "Pipeline":
        if spec is None or not spec.strip():
            raise CifarlabError("empty pipeline: give comma-separated steps, e.g. " + DEFAULT_PIPELINE)
        return cls(tuple(parse_step(part) for part in spec.split(",")))

    @property
    def spec(self) -> str:
        return ",".join(step.text for step in self.steps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Apply every step to a whole float batch (N, C, H, W) at once."""
        out = images
        for step in self.steps:
            out = step(out)
        return out

    def compose(self) -> v2.Compose:
        """The same pipeline as torchvision v2 transform objects (what a user would write)."""
        return v2.Compose([step.transform_object() for step in self.steps])

    @property
    def transposes(self) -> bool:
        """True when the steps turn the image a quarter turn an odd number of times."""
        return sum(step.spec.transposes(step.kwargs) for step in self.steps) % 2 == 1

    @property
    def uses_extremes(self) -> bool:
        """True when a step needs each image's minimum and maximum (autocontrast)."""
        return any(step.spec.uses_extremes for step in self.steps)

    @property
    def leading_stretch(self) -> bool:
        """True when the pipeline starts with autocontrast, which SeparableNet(stretch=True) does exactly."""
        return bool(self.steps) and self.steps[0].name == "autocontrast"

    def after_stretch(self) -> "Pipeline":
        """The steps after a leading autocontrast (all of them when there is none)."""
        return Pipeline(self.steps[1:]) if self.leading_stretch else self

    def leading_curve(self, input_shape=(3, 32, 32), levels: int = CURVE_LEVELS) -> tuple[torch.Tensor | None, int]:
        """(curve, steps): the longest run of leading steps that act on each channel's values alone
        (brightness, gamma, solarize, invert, normalize...), as the value each of the `levels` input
        levels 0, 1/(levels-1), ..., 1 becomes in each channel: a (C, levels) table, exact for
        8-bit images (which the default levels include). Found by probing, not by name: the steps' outputs on a ramp give the table,
        and random 8-bit images must then agree with it to float precision (a step that mixes
        channels, moves pixels, or looks at the whole image, like contrast's mean, does not).
        (None, 0) when the pipeline does not start with such a step, or is linear (its operator
        holds it exactly already)."""
        from ..models.separable import apply_curve
        c = input_shape[0]
        if self.is_linear(input_shape):
            return None, 0
        # k / (levels - 1) as the data's own conversion computes it (linspace can differ by an ulp)
        ramp = (torch.arange(levels).float() / (levels - 1)).view(1, 1, 1, levels).expand(1, c, 1, levels).contiguous()
        g = torch.Generator().manual_seed(0)
        check = torch.randint(0, levels, (4, *input_shape), generator=g).float() / (levels - 1)
        found, table = 0, None
        for n in range(1, len(self.steps) + 1):
            step = self.steps[n - 1]
            if step.spec.spatial or step.spec.uses_extremes:
                break
            head = Pipeline(self.steps[:n])
            try:
                curve = head(ramp).reshape(c, levels)
                expected = head(check)
            except Exception:  # noqa: BLE001 -- a step that cannot run on a 1-pixel-high ramp is not per value
                break
            if expected.shape != check.shape or not torch.allclose(apply_curve(check, curve), expected, atol=1e-6):
                break
            found, table = n, curve.float()
        return table, found

    def leading_color_map(self, input_shape=(3, 32, 32), nodes: int = COLOR_NODES) -> tuple[torch.Tensor | None, int]:
        """(table, steps): the longest run of leading steps that map each pixel's colour alone (hue,
        and the per-value steps and blends beside it), as what the colours of a nodes³ lattice over
        [0, 1]³ become: a (C, nodes, nodes, nodes) table indexed [channel, r, g, b], interpolated
        trilinearly between the nodes (not exact: COLOR_NODES). Found by probing, not by name: each
        pixel's output must not change when the other pixels do (contrast's mean and autocontrast's
        extremes do), and the steps must commute with shuffling the pixels. Three channels in and
        out; (None, 0) otherwise, or when the pipeline is linear (its operator holds it exactly)."""
        c, h, w = input_shape
        if c != 3 or not self.steps or self.is_linear(input_shape):
            return None, 0
        g = torch.Generator().manual_seed(0)
        x = torch.rand(4, *input_shape, generator=g, dtype=torch.float64)
        keep = torch.rand(1, 1, h, w, generator=g) < 0.5
        others = torch.where(keep, x, torch.rand(x.shape, generator=g, dtype=torch.float64))
        shuffle = torch.randperm(h * w, generator=g)
        found = 0
        for n in range(1, len(self.steps) + 1):
            step = self.steps[n - 1]
            if step.spec.spatial or step.spec.uses_extremes:
                break
            if n > 1 and _exact_alone(step, input_shape):
                break   # a per-value step or a blend after the colour steps: its own front is exact, the table is not
            head = Pipeline(self.steps[:n])
            try:
                y = head(x)
                if y.shape != x.shape:
                    break
                alone = torch.allclose(torch.where(keep, head(others), 0), torch.where(keep, y, 0), rtol=0, atol=1e-12)
                shuffled = head(x.flatten(2)[..., shuffle].view_as(x))
                everywhere = torch.allclose(shuffled, y.flatten(2)[..., shuffle].view_as(y), rtol=0, atol=1e-12)
            except Exception:  # noqa: BLE001 -- a step that cannot run on these inputs is not of this form
                break
            if not (alone and everywhere):
                break
            found = n
        if not found:
            return None, 0
        axis = torch.linspace(0, 1, nodes, dtype=torch.float64)
        lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(1, c, nodes * nodes, nodes)
        table = Pipeline(self.steps[:found])(lattice).reshape(c, nodes, nodes, nodes)
        return table.float(), found

    def leading_clamped_affine_run(self, input_shape=(3, 32, 32)) -> tuple[torch.Tensor | None, int]:
        """(table, steps): the longest run of leading steps that is one `leading_clamped_affine` as a
        whole: a blend with the linear per-pixel steps around it (grayscale:3, then contrast)."""
        table, found = None, 0
        for n in range(1, len(self.steps) + 1):
            fitted = self.leading_clamped_affine(input_shape, steps=n)
            if fitted is None:
                break
            table, found = fitted, n
        return table, found

    def leading_clamped_affine(self, input_shape=(3, 32, 32), images: int = 16, steps: int = 1) -> torch.Tensor | None:
        """The first step (or `steps`) as clamp(A·x + B·mean(x) + b, 0, 1) per pixel, where mean(x) is the image's
        mean of each channel, when it is exactly that: torchvision's brightness, saturation and
        contrast (a blend with black, the pixel's grey, or the image's mean grey, then the clamp).
        Fitted by least squares on the outputs the clamp left alone, then checked to float precision
        on fresh images. Returns [A | B | b] as a (C, 2C+1) float32 table, or None."""
        from ..models.separable import clamped_affine
        if len(self.steps) < steps or any(s.spec.spatial or s.spec.uses_extremes for s in self.steps[:steps]):
            return None
        step, c = Pipeline(self.steps[:steps]), input_shape[0]

        def images_with_varied_means(seed):
            g = torch.Generator().manual_seed(seed)
            low = torch.rand(images, 1, 1, 1, generator=g, dtype=torch.float64) * 0.6
            span = 0.1 + torch.rand(images, 1, 1, 1, generator=g, dtype=torch.float64) * (1 - low - 0.1)
            return low + span * torch.rand(images, *input_shape, generator=g, dtype=torch.float64)

        try:
            x = images_with_varied_means(0)
            y = step(x)
            if y.shape != x.shape:
                return None
            features = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, c),
                                  x.mean((2, 3)).repeat_interleave(x.shape[2] * x.shape[3], 0),
                                  torch.ones(x.numel() // c, 1, dtype=x.dtype)], 1)
            rows = []
            for channel in range(c):
                target = y[:, channel].reshape(-1)
                free = (target > 1e-9) & (target < 1 - 1e-9)
                if free.sum() < 4 * features.shape[1]:
                    return None
                rows.append(torch.linalg.lstsq(features[free], target[free, None]).solution[:, 0])
            table = torch.stack(rows)
            fresh = images_with_varied_means(1)
            if (clamped_affine(fresh, table) - step(fresh)).abs().max() > 1e-7:
                return None
        except Exception:  # noqa: BLE001 -- a step that cannot run on these inputs is not of this form
            return None
        return table.float()

    def after(self, steps: int) -> "Pipeline":
        """The pipeline without its first `steps` steps."""
        return Pipeline(self.steps[steps:])

    def spatial_part(self) -> "Pipeline | None":
        """The steps that move or mix pixels (resize, rotate, blur...), without the per-pixel ones:
        the part a SeparableNet holds in its row/column (or dense) operator. None if there is none."""
        steps = tuple(step for step in self.steps if step.spec.spatial)
        return Pipeline(steps) if steps else None

    def output_shape(self, input_shape=(3, 32, 32)) -> tuple[int, int, int]:
        probe = torch.zeros(1, *input_shape)
        try:
            return tuple(self(probe).shape[1:])
        except Exception as e:  # torchvision raises for impossible combinations
            raise CifarlabError(f"pipeline {self.spec!r} cannot run on images of shape "
                                f"{tuple(input_shape)}: {e}") from None

    def is_linear(self, input_shape=(3, 32, 32), trials: int = 4, tol: float = 1e-5) -> bool:
        """Check affinity by superposition on random inputs in [0, 1]:
        P(a·x + (1-a)·y) = a·P(x) + (1-a)·P(y), and P(s·x) = s·P(x) + (1-s)·P(0). Half the inputs
        are pixel noise, half blocks of black and white: a blur turns noise into grey near 0.5,
        where a later contrast or sharpness never clamps, and the pipeline looked linear."""
        g = torch.Generator().manual_seed(0)
        c, h, w = input_shape

        def inputs():
            noise = torch.rand(trials, *input_shape, generator=g, dtype=torch.float64)
            blocks = torch.rand(trials, c, 4, 4, generator=g, dtype=torch.float64).round()
            blocks = blocks.repeat_interleave(-(-h // 4), 2)[:, :, :h].repeat_interleave(-(-w // 4), 3)[..., :w]
            return torch.cat([noise, blocks])
        x, y = inputs(), inputs()
        a = torch.rand(2 * trials, 1, 1, 1, generator=g, dtype=torch.float64)
        px, py, p0 = self(x), self(y), self(torch.zeros_like(x))
        mix_ok = torch.allclose(self(a * x + (1 - a) * y), a * px + (1 - a) * py, atol=tol)
        scale_ok = torch.allclose(self(a * x), a * px + (1 - a) * p0, atol=tol)
        return bool(mix_ok and scale_ok)

    def key(self) -> str:
        """Identifies the ground truth this pipeline gives (torchvision's version included)."""
        text = f"{self.spec}|torchvision={torchvision.__version__}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _exact_alone(step: Step, input_shape) -> bool:
    """Whether a non-linear step alone is a curve or one of torchvision's blends, which sepnet does
    exactly (solarize's jump, inside a colour table, would be smeared over a cell of the lattice)."""
    alone = Pipeline((step,))
    if alone.is_linear(input_shape):
        return False   # the table holds a linear step after the colour steps as well as they are held
    return alone.leading_curve(input_shape)[1] > 0 or alone.leading_clamped_affine(input_shape) is not None
