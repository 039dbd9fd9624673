"""Timing done right: warm-up, repeats, device synchronisation, median and spread.

An equivalent of `torch.utils.benchmark.Timer.timeit` that keeps the process's thread
count (Timer pins one thread unless told otherwise) and can be interrupted between repeats.

Contenders compared with each other are timed in interleaved rounds (each round runs every
one of them once, the order rotated round by round), so that a shared machine's slow spells
hit them alike; a ratio between two of them is then the median of the per-round ratios.
On this project's 2-core VM, timing a model and its DataLoader floor one after the other gave
ratios between 1.2x and 2.7x from run to run; in paired rounds, four runs gave 1.87x to 2.49x.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..devices import synchronize


@dataclass
class Timing:
    median: float        # seconds for one pass over the whole workload
    low: float
    high: float
    samples: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def measure_rounds(passes: dict[object, Callable[[], object]], repeats: int, device: torch.device,
                   warmups: dict[object, Callable[[], object]] | None = None) -> dict[object, Timing]:
    """Warm each pass up once, then time `repeats` rounds of every pass, rotating the order so
    no pass always runs first (or right after the same neighbour). samples[i] is round i."""
    names = list(passes)
    for name in names:
        ((warmups or {}).get(name) or passes[name])()
    synchronize(device)
    samples: dict[object, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            passes[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s), max(s), s) for name, s in samples.items()}


def paired_ratio(a: dict, b: dict) -> float | None:
    """a's time over b's: the median of per-round ratios when both were timed in the same
    rounds, else the ratio of the medians."""
    if not a or not b:
        return None
    if a.get("round_group") is not None and a.get("round_group") == b.get("round_group"):
        return statistics.median(x / y for x, y in zip(a["samples"], b["samples"]))
    return a["median"] / b["median"]


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Settings that change how the kernels' threads behave: OMP_WAIT_POLICY=ACTIVE (threads spin
# between calls instead of sleeping) changed the model's times here by up to 1.4x.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def machine_facts(devices: list[torch.device]) -> dict:
    import torchvision

    facts = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
             "torch": torch.__version__, "torchvision": torchvision.__version__,
             "python": platform.python_version(), "platform": platform.platform(),
             "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
             "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    for device in devices:
        if device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(device)
            facts["cuda"] = torch.version.cuda
        elif device.type == "mps":
            facts["gpu"] = "Apple MPS"
    return facts
