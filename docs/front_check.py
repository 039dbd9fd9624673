"""Does every exact front do what the steps it replaces do? Random registry chains, probed and built.

    python docs/front_check.py 400

One-, two- and three-step chains of registry steps (their survey arguments and a few more: a quarter
turn, a non-square resize and crop, an uneven pad), each in front of the default pipeline. For each
chain with fronts, sepnet is built with the probed tables, and its fronts (`SeparableNet.fronts`) are
compared with the steps they replace on random 8-bit images. A row is printed where they differ by
more than 1e-4 (2e-2 with a colour table, which interpolates), or where the net's output has the
wrong shape. Curves on values between their levels (after a blur, say) show up here by design:
solarize's jump is interpolated over one of the table's 4,080 intervals.
"""
import itertools
import random
import sys

import torch

from cifarlab.models import create_model
from cifarlab.pipeline import DEFAULT_PIPELINE, Pipeline
from cifarlab.transform.config import TransformConfig
from cifarlab.transform.loop import exact_front
from cifarlab.transform.survey import STEP_ARGUMENTS

EXTRA_STEPS = ["rotate:30:bilinear", "rotate:90", "resize:20x24", "center_crop:20x28", "adjust_hue:-0.3",
               "solarize:0.3", "adjust_gamma:1.5", "pad:2x0x3x1", "adjust_sharpness:0.3", "gaussian_blur:3"]


def main(count: int, seed: int = 1) -> None:
    steps = [f"{name}:{args}" if args else name for name, args in STEP_ARGUMENTS.items()] + EXTRA_STEPS
    chains = [c for n in (1, 2, 3) for c in itertools.permutations(steps, n)]
    random.Random(seed).shuffle(chains)
    x = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(3)).float() / 255
    checked = differ = 0
    for chain in chains[:count]:
        pipeline = Pipeline.parse(",".join(chain) + "," + DEFAULT_PIPELINE)
        out_shape = pipeline.output_shape((3, 32, 32))
        front, rest, tables = exact_front(TransformConfig(), pipeline, (3, 32, 32))
        if not front:
            continue
        checked += 1
        net = create_model("sepnet", in_shape=(3, 32, 32), out_shape=out_shape, **front).eval()
        with torch.no_grad():
            for name, table in tables.items():
                getattr(net, name).copy_(table)
            replaced = Pipeline(pipeline.steps[:len(pipeline.steps) - len(rest.steps)])
            error = (net.fronts(x) - replaced(x)).abs().max().item()
            shaped = net(x).shape[1:] == out_shape
        if error > (2e-2 if "color" in front["fronts"] else 1e-4) or not shaped:
            differ += 1
            print(f"{','.join(chain)}  |  {front['fronts']}  |  max error {error:.2g}" + ("" if shaped else "  | SHAPE"))
    print(f"{checked} chains with fronts checked, {differ} differ")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
