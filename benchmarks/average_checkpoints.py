"""Average the weights of a run's last epoch checkpoints into one generator (stochastic weight averaging).

A GAN's generator swings from epoch to epoch: on the real pairs one epoch removes more of the drops
and the next leaves dry photos more alone. Averaging the weights of the last few epochs of one run
(Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018; the
weight EMA of BasicSR and NAFNet does the same step by step) gives one model between them, without a
choice per epoch. All checkpoints must share one architecture: the epochs of one run do.

    python benchmarks/average_checkpoints.py ~/runs/rest-v3/epochs --last 5 --out /tmp/averaged.keras
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def average(paths):
    """One generator whose weights are the mean of the generators saved at ``paths``."""
    import keras
    import numpy as np

    import keras_derain.models  # noqa: F401  (registers the custom layers)

    models = [keras.saving.load_model(path, compile=False) for path in paths]
    shapes = [[weight.shape for weight in model.get_weights()] for model in models]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(f"{paths}: the checkpoints differ in architecture")
    weights = [np.mean(values, axis=0) for values in zip(*(model.get_weights() for model in models))]
    models[0].set_weights(weights)
    return models[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("epochs", type=Path, help="a folder of epNNN.keras checkpoints")
    parser.add_argument("--last", type=int, default=5, help="how many of the newest epochs to average")
    parser.add_argument("--out", type=Path, required=True, help="the averaged generator (.keras)")
    args = parser.parse_args(argv)
    paths = sorted(args.epochs.glob("ep*.keras"))[-args.last :]
    if len(paths) < args.last:
        print(f"error: {args.epochs}: {len(paths)} checkpoints, fewer than --last {args.last}", file=sys.stderr)
        return 2

    from keras_derain.atomic import atomic_output

    generator = average(paths)
    with atomic_output(args.out) as path:
        generator.save(path)
    print(f"wrote {args.out}: the mean of {', '.join(path.name for path in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
