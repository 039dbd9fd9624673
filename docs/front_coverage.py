"""Which registry chains sepnet does exactly in front, and which it still has to learn.

    python docs/front_coverage.py 250

Random two- and three-step chains of the registry's steps (their survey arguments, plus
`rotate:30:bilinear`), each in front of the default pipeline: for the non-linear ones,
`exact_front` is probed (no training) and a chain counts as learned when what it leaves is not
linear. Prints the count and the learned chains with the fronts found and the rest.
"""
import itertools
import random
import sys

from cifarlab.pipeline import DEFAULT_PIPELINE, Pipeline
from cifarlab.transform.config import TransformConfig
from cifarlab.transform.loop import exact_front, rest_shape
from cifarlab.transform.survey import STEP_ARGUMENTS

IN_SHAPE = (3, 32, 32)


def main(count: int, seed: int = 0) -> None:
    steps = [f"{name}:{args}" if args else name for name, args in STEP_ARGUMENTS.items()] + ["rotate:30:bilinear"]
    chains = [c for n in (2, 3) for c in itertools.permutations(steps, n)]
    random.Random(seed).shuffle(chains)
    learned, non_linear = [], 0
    for chain in chains[:count]:
        pipeline = Pipeline.parse(",".join(chain) + "," + DEFAULT_PIPELINE)
        if pipeline.is_linear(IN_SHAPE):
            continue
        non_linear += 1
        front, rest, _ = exact_front(TransformConfig(), pipeline, IN_SHAPE)
        if not rest.is_linear(rest_shape(front, IN_SHAPE)):
            learned.append((",".join(chain), front.get("fronts", ""), rest.spec))
    print(f"{non_linear} non-linear chains, {len(learned)} still learned")
    for row in learned:
        print(*row, sep="  |  ")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 250)
