"""What a mask-gated generator's correction head asks for, binned by its own drop mask.

`restoration_generator` outputs ``rainy + mask * correction``. The loss sees only that blend, so
where the mask is near 0 nothing constrains ``correction``, and where the mask is partly on
(a soft edge, a false positive) the blend applies a fraction of whatever ``correction`` is there.
For each real pair this reports, per bin of the predicted mask: the share of the frame, the mean
correction in Y levels (0-255 scale), the same over the pixels that were already right (the rainy
Y within ``RIGHT_LEVELS`` of the clean Y), and the change the pair needs there (clean - rainy).
A correction far from the needed change under a partial mask is what darkens right pixels.

    python benchmarks/correction_probe.py --model default
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headroom import RIGHT_LEVELS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

EDGES = (0.0, 0.05, 0.2, 0.5, 1.0)


def correction_by_mask(correction_y, mask, rainy_y, clean_y, edges=EDGES):
    """Rows ``(low, high, share, correction, correction_on_right, right_share, needed)`` per mask bin.

    Args:
        correction_y: HxW correction head output in Y levels.
        mask: HxW predicted drop mask in [0, 1]; the last bin includes ``edges[-1]``.
        rainy_y, clean_y: HxW Y of the rainy and clean frames (0-255).
        edges: increasing bin edges over the mask.

    Example:
        >>> rows = correction_by_mask(np.full((2, 2), -10.0), np.array([[0.0, 0.0], [1.0, 1.0]]),
        ...                           np.full((2, 2), 100.0), np.array([[100.0, 100.0], [90.0, 90.0]]))
        >>> [(row[2], row[3], row[6]) for row in rows if row[2] > 0]
        [(0.5, -10.0, 0.0), (0.5, -10.0, -10.0)]
    """
    right = np.abs(rainy_y - clean_y) < RIGHT_LEVELS
    rows = []
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        last = index == len(edges) - 2
        inside = (mask >= low) & ((mask <= high) if last else (mask < high))
        on_right = inside & right
        mean = lambda values, where: float(values[where].mean()) if where.any() else float("nan")  # noqa: E731
        rows.append((low, high, float(inside.mean()), mean(correction_y, inside), mean(correction_y, on_right),
                     float(on_right.mean()), mean(clean_y - rainy_y, inside)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="restoration", help="a generator with a mask-gated correction")
    parser.add_argument("--pairs", default=str(ROOT.parent / "shared" / "data" / "raindrop_real"))
    args = parser.parse_args(argv)

    import tensorflow as tf
    from PIL import Image

    from keras_derain.data import DatasetError, find_pairs
    from keras_derain.export import load_generator
    from keras_derain.metrics import rgb_to_y
    from keras_derain.models import ungated_model

    try:
        pairs = find_pairs(args.pairs)
    except DatasetError as error:
        parser.error(f"--pairs: {error}")
    probe = ungated_model(load_generator(args.model))
    luma = lambda image: rgb_to_y(tf.constant(image)).numpy()[..., 0]  # noqa: E731  (unrounded: signed changes)
    print("| pair | mask bin | share | correction (Y levels) | on right pixels | right share | needed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for rainy_file, clean_file in pairs:
        rainy = np.asarray(Image.open(rainy_file).convert("RGB"), np.float32)
        clean = np.asarray(Image.open(clean_file).convert("RGB"), np.float32)
        height, width = (rainy.shape[0] // 32) * 32, (rainy.shape[1] // 32) * 32  # the generator's multiple
        rainy, clean = rainy[:height, :width], clean[:height, :width]
        _, mask, ungated = probe.predict(rainy[None] / 127.5 - 1.0, verbose=0)
        correction = (ungated[0] + 1.0) * 127.5 - rainy  # rainy + correction, back in levels, minus rainy
        rows = correction_by_mask(luma(correction), mask[0, ..., 0], luma(rainy), luma(clean))
        for low, high, share, corr, corr_right, right_share, needed in rows:
            print(f"| {rainy_file.name} | {low:.2f}-{high:.2f} | {share:.3f} | {corr:+.1f} | {corr_right:+.1f} | "
                  f"{right_share:.3f} | {needed:+.1f} |")


if __name__ == "__main__":
    main()
