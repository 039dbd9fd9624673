"""SeparableNet, cifarlab's default transform model.

Why this shape: a convolution is translation-equivariant, so a conv-only network cannot
mirror an image, and a dense 3072 -> 784 layer is 2.4 M weights that learn slowly. The
image pipelines people write are mostly *separable*: resizing, cropping, padding, blurring
and flipping act on rows and columns independently, and grayscale/saturation act on
channels. So the network is

    y = post( Σ_k  L_k · pre(x)_k · R_kᵀ ) + b

- ``pre``: a per-pixel channel map. Linear (a 1x1 convolution: grayscale) plus, for
  non-linear pipelines, a small per-pixel MLP that also sees the image's mean features
  (gamma, contrast against the image mean, saturation, solarize, clamping);
- ``L_k`` (H_out x H_in) and ``R_k`` (W_out x W_in): learned row and column operators; a
  quarter-turn pipeline uses the transposed image (``transpose=True``); ``rank`` > 1 sums
  several separable terms for operators that are not separable (arbitrary rotations);
- ``post``: an optional per-pixel residual MLP for non-linear steps after the resize.

A rotation by an angle that is not a quarter turn is far from separable: its operator needs
hundreds of Kronecker terms (rank 323 for ``rotate:30`` then 28x28, measured by
``exact.kronecker_plan``), more work than the plain matrix. So with ``dense=True`` the
spatial part is one (H_out·W_out x H_in·W_in) matrix per network instead of ``L_k``/``R_k``
(803 k weights for 32x32 -> 28x28): the trainer picks it when the probed operator says so.

For the default pipeline (every step linear) the network is ~1.7 k weights and represents
the pipeline exactly; its forward pass is one channel mix and two small matrix products,
so it runs near the memory-copy speed of its input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


CONTEXTS = ("mean", "range")
# The exact fronts a SeparableNet can hold, in the order checkpoints without a `fronts` entry apply them
# (they hold none of the last four), which is also the order `exact_front` tries them in: second spatial
# fronts, blends and curves for chains that need one more, and the colour table, not exact, last.
FRONT_STAGES = ("spatial", "curve", "stretch", "affine", "spatial2", "affine2", "curve2", "color")


def spatial_prefix(stage: str) -> str:
    """The kwargs and buffers' prefix of a spatial front: `front_*` for "spatial", `front2_*` for "spatial2"."""
    return "front2" if stage == "spatial2" else "front"


class PointwiseMLP(nn.Module):
    """Per-pixel MLP whose second layer also sees image-wide statistics of the first layer's
    features: their mean (what `adjust_contrast` needs) and, with context="range", their
    maximum and minimum too (what `autocontrast` needs). Linear layers on a channels-last
    view: on the CPU this trains ~2.5x faster than the same MLP as 1x1 convolutions."""

    def __init__(self, channels_in: int, hidden: int, channels_out: int, act: str = "gelu",
                 context: str = "mean"):
        super().__init__()
        self.first = nn.Linear(channels_in, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.context = nn.Linear(hidden, hidden, bias=False)
        self.range_context = nn.Linear(2 * hidden, hidden, bias=False) if context == "range" else None
        self.out = nn.Linear(hidden, channels_out)
        self.act = ACTIVATIONS[act]()
        nn.init.zeros_(self.out.weight)  # starts as the identity around the linear path
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.act(self.first(x.permute(0, 2, 3, 1)))
        image_wide = self.context(h.mean((1, 2), keepdim=True))
        if self.range_context is not None:
            extremes = torch.cat([h.amax((1, 2), keepdim=True), h.amin((1, 2), keepdim=True)], dim=-1)
            image_wide = image_wide + self.range_context(extremes)
        h = self.act(self.second(h) + image_wide)
        return self.out(h).permute(0, 3, 1, 2)


def stretch_contrast(x: torch.Tensor) -> torch.Tensor:
    """Each image's channels rescaled so their minimum is 0 and maximum 1 (a flat channel is left
    as it is): torchvision's own autocontrast, so a leading `autocontrast` step is done exactly,
    which a per-pixel MLP can only approximate. Imported here: `transform apply`'s Ray actors
    import this module, and torchvision costs ~2 s."""
    import torchvision.transforms.v2.functional as F
    return F.autocontrast(x)


def apply_curve(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Each channel's values through its (C, levels) table, linear between the levels: the
    table's own values for inputs on the levels (8-bit images), an interpolation between them."""
    c, levels = curve.shape
    scaled = x.clamp(0, 1) * (levels - 1)
    low = scaled.floor().clamp_(max=levels - 2)
    frac = scaled - low
    index = low.long() + (torch.arange(c, device=x.device) * levels).view(1, c, *([1] * (x.dim() - 2)))
    flat = curve.reshape(-1)
    below = flat[index]
    return below + frac * (flat[index + 1] - below)


def spatial_front(x: torch.Tensor, left=None, right=None, dense=None, clamp: bool = True, size=None) -> torch.Tensor:
    """Σ_k L_k · X · R_kᵀ (or the dense operator) on every channel X of every image, then clamped
    to [0, 1] when `clamp`. The output is L's rows by R's rows, or `size` (height, width) for the
    dense operator (the input's size when not given)."""
    n, c, h, w = x.shape
    if dense is not None:
        ho, wo = size or (h, w)
        y = (x.reshape(n * c, h * w) @ dense.t()).view(n, c, ho, wo)
    else:
        y = torch.matmul(torch.matmul(left, x.reshape(n * c, 1, h, w)), right.transpose(-1, -2)).sum(1)
        y = y.view(n, c, left.shape[1], right.shape[1])
    return y.clamp(0, 1) if clamp else y


def apply_color(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour through a (C, n, n, n) table over [0, 1]³ indexed [channel, r, g, b],
    interpolated trilinearly (`grid_sample` on the table as a volume; inputs outside [0, 1] take
    the edge's value)."""
    n, c, h, w = x.shape
    # grid_sample reads the last coordinate as the volume's last axis (b), the first as its depth (r)
    grid = (x.permute(0, 2, 3, 1).flip(-1) * 2 - 1).reshape(1, n * h * w, 1, 1, c)
    y = F.grid_sample(table.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return y.view(table.shape[0], n, h, w).transpose(0, 1)


def clamped_affine(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """clamp(A·x + B·mean(x) + b, 0, 1) per pixel, with [A | B | b] = table (C, 2C+1) and mean(x)
    each image's mean of each channel."""
    c = x.shape[1]
    shift = x.mean((2, 3)) @ table[:, c:2 * c].T + table[:, 2 * c]
    return (torch.einsum("oc,nchw->nohw", table[:, :c], x) + shift[:, :, None, None]).clamp(0, 1)


class SeparableNet(nn.Module):
    def __init__(self, in_shape=(3, 32, 32), out_shape=(1, 28, 28), hidden: int = 0, rank: int = 1,
                 transpose: bool = False, act: str = "gelu", context: str = "mean", dense: bool = False,
                 stretch: bool = False, curve: bool = False, levels: int = 256, affine: bool = False,
                 front_rank: int = 0, front_dense: bool = False, front_clamp: bool = True,
                 color: bool = False, color_nodes: int = 65, fronts: str = "", front_height: int = 0,
                 front_width: int = 0, front2_rank: int = 0, front2_dense: bool = False, front2_clamp: bool = True,
                 front2_height: int = 0, front2_width: int = 0, affine2: bool = False, curve2: bool = False,
                 levels2: int = 256):
        super().__init__()
        if not (1 <= rank <= 64 and 0 <= hidden <= 4096):
            raise ValueError(f"rank must be from 1 to 64 and hidden from 0 to 4096, got rank={rank}, hidden={hidden}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        c, h, w = in_shape
        co, ho, wo = out_shape
        # what the spatial fronts hand on: the rest is sized for it (resize, crop or pad in front)
        self.front_size = (front_height or h, front_width or w)
        self.front2_size = (front2_height or self.front_size[0], front2_width or self.front_size[1])
        for name, size, before, held in (("front", self.front_size, (h, w), front_rank or front_dense),
                                         ("front2", self.front2_size, self.front_size, front2_rank or front2_dense)):
            if min(size) < 1 or (size != before and not held):
                raise ValueError(f"{name}_height and {name}_width need a spatial front ({name}_rank or "
                                 f"{name}_dense), got {size}")
        ih, iw = h, w
        h, w = self.front2_size
        if transpose:
            h, w = w, h
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if dense and (rank != 1 or transpose):
            raise ValueError("dense holds the whole spatial operator: it takes neither rank nor transpose")
        self.rank, self.transpose, self.dense, self.stretch = rank, transpose, dense, stretch
        # Leading per-value steps (brightness, gamma, solarize...), probed as a table per channel
        # (`Pipeline.leading_curve`, loaded by the trainer): fixed, so a buffer, not a weight.
        # First, leading steps that move pixels (rotate, blur; or a sharpness, then clamped), as one
        # spatial operator on every channel, probed (`exact.spatial_front_plan`): `front_rank` Kronecker
        # terms or a dense matrix; identity until the trainer loads it.
        self._spatial_front_buffers("front", front_rank, front_dense, (ih, iw), self.front_size)
        self._spatial_front_buffers("front2", front2_rank, front2_dense, self.front_size, self.front2_size)
        self.front_clamp, self.front2_clamp = front_clamp, front2_clamp
        self.register_buffer("curve", (torch.arange(levels) / (levels - 1)).repeat(c, 1) if curve else None)
        self.register_buffer("curve2", (torch.arange(levels2) / (levels2 - 1)).repeat(c, 1) if curve2 else None)
        # Then a step of the form clamp(A·x + B·mean(x) + b) (brightness, contrast, saturation), fitted
        # exactly (`Pipeline.leading_clamped_affine`): [A | B | b], identity until the trainer loads it.
        self.register_buffer("affine", torch.cat([torch.eye(c), torch.zeros(c, c + 1)], 1) if affine else None)
        self.register_buffer("affine2", torch.cat([torch.eye(c), torch.zeros(c, c + 1)], 1) if affine2 else None)
        # Or a run of steps that map each pixel's colour alone (hue...): a table over a lattice of
        # colours (`Pipeline.leading_color_map`), identity until the trainer loads it. Interpolated, it
        # is not exact, so it is a weight: the trainer refines it on the data (`COLOR_LR_SCALE`).
        if color and not (c == 3 and 2 <= color_nodes <= 257):
            raise ValueError(f"color needs 3 input channels and color_nodes from 2 to 257, got {c} and {color_nodes}")
        axis = torch.linspace(0, 1, color_nodes)
        self.color_table = nn.Parameter(torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))) if color else None
        self.front_order = self._front_order(fronts)
        self.mix = nn.Parameter(torch.randn(co * rank, c) / c)
        if dense:
            self.spatial = nn.Parameter(torch.randn(ho * wo, h * w) / (h * w))
        else:
            # Small random row/column operators: Adam finds the flips, crops and resizes from data.
            self.left = nn.Parameter(torch.randn(rank, ho, h) / h)
            self.right = nn.Parameter(torch.randn(rank, wo, w) / w)
        self.bias = nn.Parameter(torch.zeros(co, 1, 1))
        self.pre = PointwiseMLP(c, hidden, co * rank, act, context) if hidden else None
        self.post = PointwiseMLP(co, hidden, co, act, context) if hidden else None

    def _spatial_front_buffers(self, prefix: str, rank: int, dense: bool, in_hw, out_hw) -> None:
        """`prefix`_left/_right (rank Kronecker terms) or `prefix`_dense: identity until the trainer loads them."""
        (ih, iw), (fh, fw) = in_hw, out_hw
        first = (torch.arange(max(rank, 1)) == 0).view(-1, 1, 1)
        self.register_buffer(f"{prefix}_left", torch.eye(fh, ih).repeat(rank, 1, 1) * first if rank else None)
        self.register_buffer(f"{prefix}_right", torch.eye(fw, iw).repeat(rank, 1, 1) * first if rank else None)
        self.register_buffer(f"{prefix}_dense", torch.eye(fh * fw, ih * iw) if dense else None)

    def _front_order(self, fronts: str) -> tuple[str, ...]:
        """The fronts this net holds, in the order `fronts` names them (the trainer records the order it
        found them in); those it holds and `fronts` leaves out follow in FRONT_STAGES' order."""
        held = {stage: self._holds_front(stage) for stage in FRONT_STAGES}
        named = [stage for stage in fronts.split(",") if stage] if fronts else []
        wrong = [stage for stage in named if not held.get(stage)] or [s for s in set(named) if named.count(s) > 1]
        if wrong:
            raise ValueError(f"fronts names {', '.join(wrong)}, which the net does not hold once "
                             f"(it holds: {', '.join(s for s in FRONT_STAGES if held[s]) or 'none'})")
        return tuple(named) + tuple(stage for stage in FRONT_STAGES if held[stage] and stage not in named)

    def _holds_front(self, stage: str) -> bool:
        kind = stage.rstrip("2")
        if kind == "spatial":
            prefix = spatial_prefix(stage)
            return getattr(self, f"{prefix}_left") is not None or getattr(self, f"{prefix}_dense") is not None
        if kind == "stretch":
            return self.stretch
        return getattr(self, "color_table" if kind == "color" else stage) is not None

    def fronts(self, x: torch.Tensor) -> torch.Tensor:
        """What the net does exactly before what it learns: its fronts, in `front_order`; a second
        spatial front, blend or curve ("spatial2"...) works as the first, on its own tables."""
        for stage in self.front_order:
            kind = stage.rstrip("2")
            if kind == "spatial":
                p = spatial_prefix(stage)
                x = spatial_front(x, getattr(self, f"{p}_left"), getattr(self, f"{p}_right"),
                                  getattr(self, f"{p}_dense"), getattr(self, f"{p}_clamp"), getattr(self, f"{p}_size"))
            elif kind == "curve":
                x = apply_curve(x, getattr(self, stage))
            elif kind == "affine":
                x = clamped_affine(x, getattr(self, stage))
            elif kind == "stretch":
                x = stretch_contrast(x)
            else:
                x = apply_color(x, self.color_table)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fronts(x)
        n = x.shape[0]
        co, ho, wo = self.out_shape
        # Channel mix first: it shrinks the data 3 -> 1 before the spatial products. bmm with an
        # expanded (stride-0) weight, not matmul(2-D, 3-D), which folds the batch through copies:
        # ~10% faster at batch 1 on the CPU, the same at batch 1024.
        z = torch.bmm(self.mix.expand(n, *self.mix.shape), x.reshape(n, x.shape[1], -1))
        z = z.view(n, self.mix.shape[0], *x.shape[2:])
        if self.pre is not None:
            z = z + self.pre(x)
        if self.transpose:
            z = z.transpose(-1, -2)
        if self.dense:
            y = (z.reshape(n * co, -1) @ self.spatial.t()).view(n, co, ho, wo) + self.bias
        elif self.rank == 1:
            # Rows first, then columns with the bias fused in (baddbmm): ~1.5x faster on the CPU
            # at batch 1024 than columns-first plus a separate bias pass, and fewer calls at batch 1.
            h, w = z.shape[-2:]
            rows = torch.bmm(self.left[0].expand(n * co, ho, h), z.reshape(n * co, h, w))
            bias = self.bias.view(1, 1, 1) if co == 1 else self.bias.expand(n, co, ho, wo).reshape(n * co, ho, wo)
            y = torch.baddbmm(bias, rows, self.right[0].t().expand(n * co, w, wo)).view(n, co, ho, wo)
        else:
            z = z.reshape(n, co, self.rank, *z.shape[-2:])
            y = torch.matmul(self.left, torch.matmul(z, self.right.transpose(-1, -2))).sum(2) + self.bias
        if self.post is not None:
            y = y + self.post(y)
        return y


@register_model("sepnet")
def sepnet(in_shape=(3, 32, 32), out_shape=(1, 28, 28), hidden: int = 0, rank: int = 1,
           transpose: bool = False, act: str = "gelu", context: str = "mean", dense: bool = False,
           stretch: bool = False, curve: bool = False, affine: bool = False, front_rank: int = 0,
           front_dense: bool = False, front_clamp: bool = True, levels: int = 256, color: bool = False,
           color_nodes: int = 65, fronts: str = "", front_height: int = 0, front_width: int = 0,
           front2_rank: int = 0, front2_dense: bool = False, front2_clamp: bool = True, front2_height: int = 0,
           front2_width: int = 0, affine2: bool = False, curve2: bool = False, levels2: int = 256) -> nn.Module:
    """Default model. The trainer sets `hidden` (0 for linear pipelines, 16 otherwise, then with
    act=relu, and context=range where a step needs each image's extremes), `transpose`
    (quarter turns), `rank` or `dense` (from the probed spatial operator), `front_rank` or
    `front_dense`, `front_clamp` and the size they hand on, `front_height` and `front_width` (leading
    steps that move pixels, or a sharpness), `stretch` (then
    an autocontrast), `curve` (or steps that act on each channel's values alone), `affine` (a
    brightness, contrast or saturation), `color` (steps that map each pixel's colour: hue) and
    `fronts` (the order of these exact fronts; `front2_*`, `affine2` and `curve2`/`levels2` are a
    second spatial front, blend and curve) from the pipeline unless given in --model-args."""
    return SeparableNet(in_shape, out_shape, hidden, rank, transpose, act, context, dense, stretch, curve,
                        levels=levels, affine=affine, front_rank=front_rank, front_dense=front_dense,
                        front_clamp=front_clamp, color=color, color_nodes=color_nodes, fronts=fronts,
                        front_height=front_height, front_width=front_width, front2_rank=front2_rank,
                        front2_dense=front2_dense, front2_clamp=front2_clamp, front2_height=front2_height,
                        front2_width=front2_width, affine2=affine2, curve2=curve2, levels2=levels2)
