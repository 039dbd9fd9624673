"""The exact operator of a linear pipeline, found by probing it, and loaded into a SeparableNet.

A linear (affine) pipeline is y = A·x + b. Probing it with the C·H·W one-hot images gives A;
the zero image gives b. When A is separable (rows, columns and channels act independently,
as for resize / crop / pad / blur / flips / grayscale), it factors as
A[o,y,x,c,i,j] = M[o,c]·L[y,i]·R[x,j], found by two rank-1 SVDs (nearest Kronecker product).

Any linear pipeline of the registry factors as channels x space: A = M ⊗ S, with S the
(H_out·W_out x H·W) spatial operator. S rearranged to (H_out·H) x (W_out·W) has the SVD
Σ σ_k u_k v_kᵀ, that is S = Σ σ_k L_k ⊗ R_k (Van Loan–Pitsianis): `kronecker_plan` takes the
fewest terms that reach float precision, or the dense S where that costs less work (rotations).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CifarlabError
from ..pipeline import Pipeline
from .separable import SeparableNet


def probe_operator(pipeline: Pipeline, in_shape=(3, 32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) in float64 with A of shape (out_numel, in_numel): pipeline(x) = A·x + b."""
    if not pipeline.is_linear(in_shape):
        raise CifarlabError(f"pipeline {pipeline.spec!r} is not linear (superposition fails on random "
                            f"inputs): it has no exact operator; train a model instead")
    n = torch.Size(in_shape).numel()
    basis = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
    with torch.inference_mode():
        bias = pipeline(torch.zeros(1, *in_shape, dtype=torch.float64))[0]
        columns = torch.cat([pipeline(basis[i:i + 1024]) for i in range(0, n, 1024)]) - bias
    return columns.reshape(n, -1).t().contiguous(), bias


def _rank_one(m: torch.Tensor, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) with m ≈ u vᵀ: the top singular pair by power iteration (a full SVD of these
    wide matrices takes tens of seconds on two cores; a rank-1 matrix converges at once)."""
    v = torch.randn(m.shape[1], generator=torch.Generator().manual_seed(0), dtype=m.dtype)
    u = m @ v
    for _ in range(iterations):
        u = m @ v
        u = u / u.norm().clamp_min(1e-300)
        v = m.t() @ u
    return u, v


def exact_separable_net(pipeline: Pipeline, in_shape=(3, 32, 32), tol: float = 1e-6) -> SeparableNet:
    """A SeparableNet holding the pipeline's exact operator (refused if not separable)."""
    a, b = probe_operator(pipeline, in_shape)
    c, h, w = in_shape
    co, ho, wo = b.shape
    t = a.view(co, ho, wo, c, h, w)
    transpose = pipeline.transposes
    if transpose:
        t = t.transpose(-1, -2)       # the network transposes its input first
        h, w = w, h
    # Rank-1 over (row pair) x (everything else), then (column pair) x (channel pair).
    left, rest = _rank_one(t.permute(1, 4, 0, 3, 2, 5).reshape(ho * h, -1))
    right, mix = _rank_one(rest.view(co, c, wo, w).permute(2, 3, 0, 1).reshape(wo * w, co * c))
    left, right, mix = left.view(ho, h), right.view(wo, w), mix.view(co, c)
    approx = torch.einsum("oc,yi,xj->oyxcij", mix, left, right)
    error = (approx - t).norm() / t.norm().clamp_min(1e-30)
    if error > tol:
        raise CifarlabError(f"pipeline {pipeline.spec!r} is linear but not separable (best separable "
                            f"operator is off by {float(error):.1e} relative): train a model instead")
    if (b - b.mean((1, 2), keepdim=True)).abs().max() > 1e-6:
        raise CifarlabError(f"pipeline {pipeline.spec!r} adds a bias that varies across the image; "
                            f"the separable network holds one bias per channel")
    net = SeparableNet(in_shape, (co, ho, wo), transpose=transpose)
    with torch.no_grad():
        net.mix.copy_(mix)
        net.left.copy_(left.unsqueeze(0))
        net.right.copy_(right.unsqueeze(0))
        net.bias.copy_(b.mean((1, 2), keepdim=True))
    return net


# Relative (Frobenius) error of the spatial operator counted as exact: far below what float32
# weights resolve (~1e-7), so the network's outputs are off by float32 rounding only.
EXACT_TOL = 1e-6
MAX_RANK = 64                  # SeparableNet's own limit
DENSE_LIMIT = 1 << 22          # weights of a dense spatial operator (16 MB in float32): 64x64 from 32x32
PROBE_LIMIT = 1 << 22          # entries of a probed spatial operator; beyond, no plan (the SVD gets slow)


@dataclass
class SpatialPlan:
    """How a SeparableNet holds a probed spatial operator: `rank` Kronecker terms, or dense."""
    operator: torch.Tensor     # (ho·wo, h·w) float64
    shape: tuple[int, int, int, int]  # ho, wo, h, w
    transpose: bool
    rank: int | None           # None: dense
    needed_rank: int | None    # fewest terms reaching EXACT_TOL; None: more than were worth looking for
    error: float               # relative error of the chosen form
    looked: int = 0            # how many terms were looked for
    left: torch.Tensor | None = None   # (rank, ho, h)
    right: torch.Tensor | None = None  # (rank, wo, w)

    @property
    def exact(self) -> bool:
        return self.error <= EXACT_TOL

    def model_kwargs(self) -> dict:
        if self.rank is None:
            return {"dense": True, "transpose": False, "rank": 1}
        return {"rank": self.rank, "transpose": self.transpose, "dense": False}

    def describe(self) -> str:
        form = "a dense spatial operator" if self.rank is None else f"rank {self.rank}"
        if self.exact:
            return f"{form} holds the probed spatial operator (relative error {self.error:.0e})"
        return f"{form} is off by {self.error:.1e} (relative) from the probed spatial operator, which {self.needs()}"

    def needs(self) -> str:
        if self.needed_rank is None:
            return f"needs more than {self.looked} Kronecker terms (rank)"
        return f"needs rank {self.needed_rank}"

    def load_spatial(self, net: SeparableNet) -> None:
        """Copies the spatial operator into the net (mix and bias are left alone)."""
        with torch.no_grad():
            if net.dense:
                net.spatial.copy_(self.operator)
            else:
                net.left.copy_(self.left)
                net.right.copy_(self.right)


def kronecker_plan(operator: torch.Tensor, shape, transpose: bool = False, rank: int | None = None) -> SpatialPlan:
    """The cheapest sepnet form of a spatial operator (ho·wo, h·w) that reaches float precision:
    the fewest Kronecker terms, unless the dense matrix is less work; `rank` forces a rank."""
    ho, wo, h, w = shape
    op = operator.view(ho, wo, h, w)
    if transpose:  # the network transposes its input before the row and column products
        op, h, w = op.transpose(-1, -2), w, h
    rearranged = op.permute(0, 2, 1, 3).reshape(ho * h, wo * w)
    dense_work, term_work = ho * wo * h * w, ho * h * w + ho * w * wo
    # Beyond `worth` terms the dense matrix is less work (unless it is too big to hold).
    worth = MAX_RANK if dense_work > DENSE_LIMIT else min(MAX_RANK, dense_work // term_work)
    u, sigma, vt, tail = _leading_terms(rearranged, max(rank or 0, worth, 1))
    fits = (tail <= EXACT_TOL).nonzero()
    needed = int(fits[0]) + 1 if len(fits) else None
    if rank is None and (needed is not None and needed <= worth or dense_work > DENSE_LIMIT):
        rank = min(needed or MAX_RANK, len(tail))
    if rank is None:
        return SpatialPlan(operator.reshape(ho * wo, -1).clone(), shape, False, None, needed, 0.0, len(tail))
    root = sigma[:rank].sqrt()
    left = (u[:, :rank] * root).t().reshape(rank, ho, h)
    right = (vt[:rank].t() * root).t().reshape(rank, wo, w)
    error = float(tail[rank - 1])
    return SpatialPlan(operator.reshape(ho * wo, -1).clone(), shape, transpose, rank, needed, error, len(tail),
                       left, right)


def _leading_terms(m: torch.Tensor, count: int):
    """The leading `count` singular triplets of m and, for each r, the relative error of keeping
    r terms. A randomized range finder (one power step), then the SVD of a small matrix: LAPACK's
    SVD of the whole (mostly rank-1) matrix takes seconds to tens of seconds on two cores."""
    count = min(count, *m.shape)
    sketch = torch.randn(m.shape[1], min(count + 8, *m.shape), generator=torch.Generator().manual_seed(0),
                         dtype=m.dtype)
    q = torch.linalg.qr(m @ (m.t() @ torch.linalg.qr(m @ sketch).Q)).Q
    small = q.t() @ m
    total = m.norm().clamp_min(1e-300)
    rest = (m - q @ small).norm()                      # what the sketch missed
    u, sigma, vt = torch.linalg.svd(small, full_matrices=False)
    kept = (sigma ** 2).flip(0).cumsum(0).flip(0)      # kept[k]: what terms k, k+1, ... hold
    tail = (torch.cat([kept[1:], kept.new_zeros(1)]) + rest ** 2).sqrt() / total
    return q @ u[:, :count], sigma[:count], vt[:count], tail[:count]


def spatial_operator(pipeline: Pipeline, in_hw=(32, 32), step: float = 1e-3) -> torch.Tensor:
    """The (ho·wo, h·w) operator of the pipeline's spatial steps on one channel, as their
    derivative at a mid-grey image (float64 differences), so that steps which clamp
    (adjust_sharpness) are seen through their linear part."""
    h, w = in_hw
    n = h * w
    grey = torch.full((1, 1, h, w), 0.5, dtype=torch.float64)
    with torch.inference_mode():
        base = pipeline(grey)
        columns = torch.cat([pipeline(grey + step * torch.eye(n, dtype=torch.float64)[i:i + 256].view(-1, 1, h, w))
                             for i in range(0, n, 256)]) - base
    return (columns / step).reshape(n, -1).t().contiguous()


@dataclass
class LinearPlan:
    """A linear pipeline as sepnet weights: channel mix ⊗ spatial plan, and a bias per channel."""
    mix: torch.Tensor          # (co, c)
    spatial: SpatialPlan
    bias: torch.Tensor         # (co,)
    error: float               # relative error of channels ⊗ space and of the per-channel bias

    def build(self, in_shape, out_shape, **kwargs) -> SeparableNet:
        net = SeparableNet(in_shape, out_shape, **(kwargs | self.spatial.model_kwargs()))
        self.load(net)
        return net

    def load(self, net: SeparableNet) -> None:
        self.spatial.load_spatial(net)
        with torch.no_grad():
            net.mix.copy_(self.mix.repeat_interleave(net.rank, dim=0))
            net.bias.copy_(self.bias.view(-1, 1, 1))


def operator_fits(in_shape, out_shape) -> bool:
    """Whether probing is affordable: the spatial operator's entries under PROBE_LIMIT."""
    return out_shape[1] * out_shape[2] * in_shape[1] * in_shape[2] <= PROBE_LIMIT


def linear_plan(pipeline: Pipeline, in_shape=(3, 32, 32), rank: int | None = None) -> LinearPlan:
    """The probed operator of a linear pipeline split into channels ⊗ space (one small
    eigenproblem on the channel pairs' Gram matrix), then `kronecker_plan` for the space."""
    a, b = probe_operator(pipeline, in_shape)
    c, h, w = in_shape
    co, ho, wo = b.shape
    pairs = a.view(co, ho * wo, c, h * w).permute(0, 2, 1, 3).reshape(co * c, -1)
    values, vectors = torch.linalg.eigh(pairs @ pairs.t())
    mix = vectors[:, -1]
    space = mix @ pairs
    total = pairs.norm().clamp_min(1e-300)
    error = float((pairs - torch.outer(mix, space)).norm() / total)
    bias = b.mean((1, 2))
    error = max(error, float((b - bias.view(-1, 1, 1)).norm() / max(float(b.norm()), 1.0)))
    plan = kronecker_plan(space.view(ho * wo, h * w), (ho, wo, h, w), pipeline.transposes, rank)
    return LinearPlan(mix.view(co, c), plan, bias, error)


def spatial_plan(pipeline: Pipeline, in_shape=(3, 32, 32), rank: int | None = None) -> SpatialPlan | None:
    """The plan for the spatial steps of a non-linear pipeline (`Pipeline.spatial_part`), or None
    when it has none or its operator is too big to probe."""
    part = pipeline.spatial_part()
    if part is None:
        return None
    h, w = in_shape[1:]
    ho, wo = part.output_shape((1, h, w))[1:]
    if not operator_fits(in_shape, (1, ho, wo)):
        return None
    return kronecker_plan(spatial_operator(part, (h, w)), (ho, wo, h, w), pipeline.transposes, rank)


def _holds(steps: Pipeline, operator: torch.Tensor, in_shape, clamp: bool) -> bool:
    """Whether `steps` are `operator` on every channel (then clamped to [0, 1]) on random images, to 1e-7."""
    h, w = in_shape[1:]
    x = torch.rand(4, *in_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = steps(x)
    if expected.shape[:2] != x.shape[:2] or expected[0, 0].numel() != operator.shape[0]:
        return False
    y = (x.reshape(-1, h * w) @ operator.t()).view_as(expected)
    return bool(((y.clamp(0, 1) if clamp else y) - expected).abs().max() <= 1e-7)


def clamped_spatial_plan(pipeline: Pipeline, in_shape=(3, 32, 32)) -> SpatialPlan | None:
    """The first step as clamp(S·x) on each channel, when it is exactly that and keeps the image's
    size: a spatial operator S (its derivative at mid-grey, `spatial_operator`) then the clamp to
    [0, 1], which is torchvision's adjust_sharpness (a blend with the blurred image). Held in a few
    Kronecker terms (the plan), checked to 1e-7 on random images; None otherwise (a linear step is
    the operator's business, a dense one is not worth it in front)."""
    if not pipeline.steps or not pipeline.steps[0].spec.spatial:
        return None
    step, (_, h, w) = Pipeline(pipeline.steps[:1]), in_shape
    try:
        if step.output_shape(in_shape) != tuple(in_shape) or step.is_linear(in_shape):
            return None
        operator = spatial_operator(step, (h, w))
        plan = kronecker_plan(operator, (h, w, h, w))
        if plan.rank is None or not plan.exact:
            return None
        if not _holds(step, operator, in_shape, clamp=True):
            return None
    except Exception:  # noqa: BLE001 -- a step that cannot be probed so is not of this form
        return None
    return plan


def spatial_front_plan(pipeline: Pipeline, in_shape=(3, 32, 32)) -> tuple[SpatialPlan, int, bool] | None:
    """(plan, steps, clamp): what of the pipeline's start sepnet does as a spatial operator on every
    channel in front of the rest: a sharpness (`clamped_spatial_plan`: the operator, then the clamp),
    or the leading steps that move pixels linearly (rotate, blur, flips, and resize, crop or pad,
    which change the size the rest sees) when a non-linear step follows, so that step sees the moved
    pixels as it does in the pipeline (a per-value step after a rotation cannot move before it);
    when that step is a sharpness, it joins them (its operator times theirs, then the clamp). None
    when neither applies, or when the operator is too big to probe."""
    plan = clamped_spatial_plan(pipeline, in_shape)
    if plan is not None:
        return plan, 1, True
    steps, (c, h, w) = pipeline.steps, in_shape
    n = 0
    while n < len(steps) and steps[n].spec.spatial:
        n += 1
    try:
        while n > 0:
            head = Pipeline(steps[:n])
            if head.output_shape(in_shape)[0] == c and head.is_linear(in_shape):
                break
            n -= 1
        if n == 0:
            return None
        moved = head.output_shape(in_shape)
        if Pipeline(steps[n:]).is_linear(moved) or not operator_fits(in_shape, moved):
            return None
        operator = spatial_operator(head, (h, w))
        if not _holds(head, operator, in_shape, clamp=False):
            return None   # not the same operator on every channel, or an offset
        ho, wo = moved[1:]
        if clamped_spatial_plan(Pipeline(steps[n:]), moved) is not None:
            sharpened = spatial_operator(Pipeline(steps[n:n + 1]), (ho, wo)) @ operator
            if _holds(Pipeline(steps[:n + 1]), sharpened, in_shape, clamp=True):
                return kronecker_plan(sharpened, (ho, wo, h, w)), n + 1, True
        return kronecker_plan(operator, (ho, wo, h, w)), n, False
    except Exception:  # noqa: BLE001 -- steps that cannot be probed so are left to the rest
        return None


def exact_operator_net(pipeline: Pipeline, in_shape=(3, 32, 32)) -> SeparableNet:
    """The exact operator of any linear pipeline whose operator can be probed, as the cheapest
    sepnet that holds it: one separable term when that is exact, else `linear_plan`'s Kronecker
    terms or dense matrix (a rotation by a non-right angle). Refused, in one line, for non-linear
    pipelines and for operators sepnet cannot hold; `transform bench` times it as a contender."""
    try:
        return exact_separable_net(pipeline, in_shape)
    except CifarlabError:
        if not pipeline.is_linear(in_shape):
            raise
    out_shape = pipeline.output_shape(in_shape)
    if not operator_fits(in_shape, out_shape):
        raise CifarlabError(f"pipeline {pipeline.spec!r}: its operator ({out_shape[1]}x{out_shape[2]} outputs) is "
                            f"too big to probe")
    plan = linear_plan(pipeline, in_shape)
    if plan.error > EXACT_TOL or not plan.spatial.exact:
        raise CifarlabError(f"pipeline {pipeline.spec!r} is linear but sepnet cannot hold its operator exactly "
                            f"(off by {max(plan.error, plan.spatial.error):.1e} relative)")
    return plan.build(in_shape, out_shape)
