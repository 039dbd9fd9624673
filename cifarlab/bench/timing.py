"""Timing done right: warm-up, repeats, device synchronisation, median and spread.

An equivalent of `torch.utils.benchmark.Timer.timeit` that keeps the process's thread
count (Timer pins one thread unless told otherwise) and can be interrupted between repeats.
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


def measure(run_once: Callable[[], object], repeats: int, device: torch.device,
            warmup: Callable[[], object] | None = None) -> Timing:
    """Time `repeats` full passes after one warm-up pass (`warmup`, or `run_once` itself)."""
    (warmup or run_once)()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), max(samples), samples)


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


def machine_facts(devices: list[torch.device]) -> dict:
    import torchvision

    facts = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
             "torch": torch.__version__, "torchvision": torchvision.__version__,
             "python": platform.python_version(), "platform": platform.platform(),
             "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    for device in devices:
        if device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(device)
            facts["cuda"] = torch.version.cuda
        elif device.type == "mps":
            facts["gpu"] = "Apple MPS"
    return facts
