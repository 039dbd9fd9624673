"""Muon for convolution filters, SGD for everything else: airbench94_muon's optimizer split.

airbench94_muon (KellerJordan/cifar10-airbench) reaches airbench94's accuracy in 8 epochs instead
of 9.9 by orthogonalising each filter bank's update (Muon) and leaving shifts and the head on
Nesterov SGD. Fewer steps for the same accuracy is what a CPU budget is short of.

The orthogonalisation is written here, not taken from torch.optim.Muon: torch's takes 2-D
parameters only and runs its Newton-Schulz iteration in bfloat16, which a CPU without native
bfloat16 (the Zen 3 runs) emulates at ~0.3 s a step, more than doubling a `fast` epoch; in float32
it costs about a tenth of one (13.8 s against 12.6 s at 32x32 there). After each step a bank is
rescaled to norm sqrt(out), as airbench does: BatchNorm follows every convolution, so the scale
carries nothing, and a fixed scale keeps Muon's step a fixed share of the weights instead of
shrinking as they grow.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)   # Muon's quintic (Keller Jordan; torch.optim.Muon's default)
NS_STEPS = 3      # airbench94_muon's; a CPU pays for each


def is_filter_bank(p: nn.Parameter) -> bool:
    return p.ndim == 4


def orthogonalised(update: torch.Tensor) -> torch.Tensor:
    """Newton-Schulz: `update` (out, ...) as a matrix with its singular values pushed towards 1."""
    a, b, c = NS_COEFFICIENTS
    x = update.reshape(len(update), -1).float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp_min(1e-7)
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).reshape(update.shape)


class Muon(torch.optim.Optimizer):
    """Muon on whole filter banks, as airbench94_muon runs it: Nesterov momentum, the update
    orthogonalised, a step of lr, then the bank back to norm sqrt(out). No weight decay: the
    rescaling is the constraint."""

    def __init__(self, params, lr: float, momentum: float):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w.grad)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(w.grad)
                w.sub_(orthogonalised(w.grad.add(buffer, alpha=group["momentum"])), alpha=group["lr"])
                w.mul_(math.sqrt(len(w)) / w.norm().clamp_min(1e-12))


class FilterMuon:
    """The optimizer interface the trainer uses (param_groups, zero_grad, step, state_dict) over
    an SGD for `sgd_groups` and a Muon for `filters`."""

    def __init__(self, sgd_groups: list[dict], filters: list[nn.Parameter], lr: float, momentum: float,
                 sgd_momentum: float):
        self.sgd = torch.optim.SGD(sgd_groups, momentum=sgd_momentum, nesterov=sgd_momentum > 0)
        self.muon = Muon([dict(params=filters, name="filters", base_lr=lr)], lr=lr, momentum=momentum)

    @property
    def param_groups(self) -> list[dict]:
        return self.sgd.param_groups + self.muon.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.sgd.step()
        self.muon.step()

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sgd.load_state_dict(state["sgd"])
        self.muon.load_state_dict(state["muon"])
