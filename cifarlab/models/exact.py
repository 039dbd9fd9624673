"""The exact operator of a linear pipeline, found by probing it, and loaded into a SeparableNet.

A linear (affine) pipeline is y = A·x + b. Probing it with the C·H·W one-hot images gives A;
the zero image gives b. When A is separable (rows, columns and channels act independently,
as for resize / crop / pad / blur / flips / grayscale), it factors as
A[o,y,x,c,i,j] = M[o,c]·L[y,i]·R[x,j], found by two rank-1 SVDs (nearest Kronecker product).
"""
from __future__ import annotations

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
