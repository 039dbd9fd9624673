"""`cifarlab transform bench`: the inference-time benchmark of a trained run."""
from __future__ import annotations

import click

from .app import transform


@transform.command("bench")
@click.argument("run_dir")
@click.option("--images", type=int, default=10000, show_default=True,
              help="Workload size: the run's test split tiled to this many images.")
@click.option("--batch-sizes", default="1,16,64,128,256,1024", show_default=True,
              help="Comma-separated positive integers, or 'all'.")
@click.option("--device", default="all", show_default=True,
              help="Comma-separated cpu,cuda,mps, or 'all' (every device present).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed passes after one warm-up.")
@click.option("--variants", default="default", show_default=True,
              help="Fast-path options to measure: plain,uint8,channels_last,half,compile, 'default' or 'all'.")
@click.option("--compat", is_flag=True,
              help="Reproduce the reference reports' protocol and printout (one pass, no warm-up).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench_command(run_dir, images, batch_sizes, device, repeats, variants, compat, quiet):
    """Time the trained model against per-image and batched torchvision and the floors;
    writes bench.json, bench.md and bench.png into RUN_DIR and adds them to report.md."""
    from ..bench import run_benchmark, run_compat

    if compat:
        run_compat(run_dir, images=images, batch_sizes=batch_sizes, devices=device, echo=click.echo)
        return
    run_benchmark(run_dir, images=images, batch_sizes=batch_sizes, devices=device, repeats=repeats,
                  variants=variants, quiet=quiet)
    click.echo(f"{run_dir}/bench.md")


@transform.command("bench-apply")
@click.argument("run_dir")
@click.option("--data", required=True, help="A folder of images to tile into the workload (e.g. the shared subset).")
@click.option("--scratch", required=True, help="A folder outside the repository for the tiled inputs and the "
                                               "outputs (e.g. under /tmp); reused by later runs.")
@click.option("--images", type=int, default=10000, show_default=True, help="Files in the timed workload.")
@click.option("--memory-images", type=int, default=50000, show_default=True,
              help="Files for the memory check (apply only; 0: none).")
@click.option("--ray/--no-ray", default=True, show_default=True, help="Time --engine ray when Ray is installed.")
@click.option("--ray-cpus", type=int, default=2, show_default=True, help="CPUs of the local Ray instance.")
def bench_apply_command(run_dir, data, scratch, images, memory_images, ray, ray_cpus):
    """Time `transform apply` (workers 1 and 2, and Ray) against the per-image loop a user would
    write (PIL open, torchvision v2, PIL save) on image files; images/s, ratios, peak memory and
    output checks in one run; writes SCRATCH/bench-apply.md and .json."""
    from ..bench.apply_bench import bench_apply
    results = bench_apply(run_dir, data, scratch, images, memory_images or None, ray, ray_cpus)
    click.echo(results["markdown"], nl=False)
