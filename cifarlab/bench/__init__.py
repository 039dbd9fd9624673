"""The inference-time benchmark: the trained model against every baseline and floor.

    cifarlab transform bench RUN_DIR [--images 10000] [--batch-sizes 1,16,64,128,256,1024]
                                     [--device cpu,cuda] [--repeats 5] [--compat]

Python: ``from cifarlab.bench import run_benchmark; run_benchmark("runs/my-run")``.
"""
from .runner import DEFAULT_BATCH_SIZES, open_run, parse_batch_sizes, parse_devices, run_benchmark

__all__ = ["run_benchmark", "run_compat", "DEFAULT_BATCH_SIZES", "parse_batch_sizes", "parse_devices"]


def run_compat(run_dir, images: int = 10000, batch_sizes=DEFAULT_BATCH_SIZES, devices=None, echo=print) -> dict:
    """The reference protocol and printout (see `cifarlab.bench.compat`) on the benchmark's workload."""
    from .compat import reference_inference_time

    sizes, devs = parse_batch_sizes(batch_sizes), parse_devices(devices)
    model, workload = open_run(run_dir, images)
    return reference_inference_time(model, workload.inputs, workload.pipeline.compose(), devs, sizes, echo)
