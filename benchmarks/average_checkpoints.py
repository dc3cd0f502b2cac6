"""Average the weights of a run's last epoch checkpoints into one generator (stochastic weight averaging).

A GAN's generator swings from epoch to epoch: on the real pairs one epoch removes more of the drops
and the next leaves dry photos more alone. Averaging the weights of the last few epochs of one run
(Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018; the
weight EMA of BasicSR and NAFNet does the same step by step) gives one model between them, without a
choice per epoch. All checkpoints must share one architecture: the epochs of one run do.

    python benchmarks/average_checkpoints.py ~/runs/rest-v3/epochs --last 5 --out /tmp/averaged.keras

Given several generators instead of a folder (files or built-in names), it averages those, with equal weights.
Between a fine-tune and the model it started from, that is a weight-space ensemble (Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022: WiSE-FT): both lie in one basin, so their mean is a
working model between them:

    python benchmarks/average_checkpoints.py default ~/runs/s18/rest-halo-s3-mean.keras --out /tmp/wise.keras
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def average(paths):
    """One generator whose weights are the mean of the generators saved at ``paths``."""
    import numpy as np

    from keras_derain.export import load_generator  # imports keras_derain.models, which registers the custom layers

    models = [load_generator(path) for path in paths]
    shapes = [[weight.shape for weight in model.get_weights()] for model in models]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(f"{paths}: the checkpoints differ in architecture")
    weights = [np.mean(values, axis=0) for values in zip(*(model.get_weights() for model in models))]
    models[0].set_weights(weights)
    return models[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+",
                        help="a folder of epNNN.keras checkpoints, or two or more generators (files or built-in names)")
    parser.add_argument("--last", type=int, default=5, help="with a folder: how many of its newest epochs to average")
    parser.add_argument("--out", type=Path, required=True, help="the averaged generator (.keras)")
    args = parser.parse_args(argv)
    if len(args.sources) == 1:
        folder = Path(args.sources[0])
        if not folder.is_dir():
            print(f"error: {folder}: not a folder of checkpoints (give a folder, or two or more generators)",
                  file=sys.stderr)
            return 2
        paths = sorted(folder.glob("ep*.keras"))[-args.last :]
        if len(paths) < args.last:
            print(f"error: {folder}: {len(paths)} checkpoints, fewer than --last {args.last}", file=sys.stderr)
            return 2
    else:
        paths = args.sources

    from keras_derain.atomic import atomic_output
    from keras_derain.export import ExportError

    try:
        generator = average(paths)
    except (ExportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with atomic_output(args.out) as path:
        generator.save(path)
    print(f"wrote {args.out}: the mean of {', '.join(Path(path).name for path in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
