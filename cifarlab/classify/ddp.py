"""Multi-process data parallel training, driven by the environment torchrun sets.

One machine, N processes (gloo on CPU, NCCL on GPU)::

    torchrun --standalone --nproc_per_node=2 -m cifarlab classify train --data DATA --out runs/ddp

Two machines (run on each, NODE_RANK 0 and 1, MASTER = the first machine's address)::

    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$MASTER:29500 -m cifarlab classify train ...

`--batch-size` stays the *global* batch: each of the W processes takes every W-th image of
each batch, so W processes follow the same schedule as one process, within noise. Rank 0
alone evaluates, decides and writes the run folder; the others receive its decisions.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    interrupted: bool = False   # set by Ctrl-C under torchrun (see `interrupts_as_flag`)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Dist:
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; each process gets its own GPU."""
    d = from_environment()
    if not d.enabled:
        return d, device
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def shard(batch_index: torch.Tensor, d: Dist) -> torch.Tensor:
    """This process's share of a global batch."""
    return batch_index[d.rank::d.world] if d.enabled else batch_index


def max_across(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """The largest of each value over processes, in one all-reduce: one clock, so every process
    stops at the same step, and one divergence flag, so a NaN on one process stops them all
    (instead of leaving the others waiting for it in the next collective)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def from_main(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Rank 0's numbers, on every process."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


@contextlib.contextmanager
def interrupts_as_flag(d: Dist):
    """Under torchrun, Ctrl-C (SIGINT) and SIGTERM reach every process at a different point, and
    a process interrupted inside a collective waits there forever for the others. So they only
    set `d.interrupted`; the flag travels in each step's all-reduce (`max_across`) and every
    process stops at the same step. One process runs with Python's usual KeyboardInterrupt
    (which the CLI also raises for SIGTERM)."""
    if not d.enabled:
        yield
        return

    def note(signum, frame):
        d.interrupted = True

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def leave(d: Dist, code: int = 0) -> NoReturn:
    """End a torchrun worker: after a clean finish, wait for every process and leave the group
    together (no process closes its connections while another still uses them); then exit
    without the interpreter's teardown, where destroying gloo's objects can abort a process
    that has finished its work ('terminate called without an active exception': seen once in
    CI, on a rank that had already written its result). A failed process (code != 0) exits at
    once: torchrun stops the others."""
    if d.enabled and dist.is_initialized() and code == 0:
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
