"""Where the error of a real pair lies: how much PSNR-Y each kind of perfect repair would give.

For each real pair it reports PSNR-Y (official protocol, `keras_derain.metrics.psnr`) of:
- the rainy input;
- ``affine``: the input after the global gain and offset on Y that best fit the clean image
  (colour/exposure difference only);
- ``filter7``: the input through the 7x7 linear filter (plus offset) on Y that best fits the clean
  image (a global blur or misalignment only);
- ``additive8`` / ``affine8``: the best correction of the input that varies as slowly as a 17x17 box
  average, as an offset alone (``rainy + box(clean - rainy)``), and as a local gain and offset
  (He et al.'s guided filter with the rainy Y as the guide and the clean Y as the target). The two
  compare what a generator's correction head can express from coarse features: ``rainy + m * c``
  against ``rainy + m * (g * rainy + c)`` (``restoration_generator(affine=True)``);
- ``oracle_diff``: the clean pixels pasted in under the pair's own difference mask
  (`keras_derain.data.pairs.difference_mask`, AttentiveGAN's rule made soft): perfect repair of
  everything that rule calls a drop;
- ``oracle_model``: the clean pixels pasted in under the generator's predicted drop mask: what the
  model would score if it repaired perfectly what it detects;
- ``model``: the generator itself;
- ``right_masked`` / ``right_shift``: the share of the frame where the rainy Y is already within
  ``RIGHT_LEVELS`` of the clean Y but the model's mask is over ``0.2``, and the model's mean Y change
  there (negative: it darkens pixels that were right); ``keep_right``: the model's PSNR-Y with those
  pixels left as they were, which says what that false repair costs.

Every oracle uses the clean image, so none is a method: they say where the headroom is. ``model``
against ``oracle_model`` splits what is left between detection (the mask) and repair (inside it).

    python benchmarks/headroom.py --model restoration
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def luma(image):
    """OpenCV's full-range Y of a uint8 RGB image, rounded, as the official protocol: HxW float64."""
    import tensorflow as tf

    from keras_derain.metrics import rgb_to_y

    return rgb_to_y(tf.constant(image, tf.float64), rounded=True).numpy()[..., 0]


def psnr_luma(y, clean_y):
    """`keras_derain.metrics.psnr` of a Y image, rounded and clipped as a uint8 Y would be."""
    from keras_derain.metrics import psnr

    y = np.clip(np.round(y), 0.0, 255.0)
    return float(psnr(y[..., None], clean_y[..., None], 255))


def affine_fit(rainy_y, clean_y):
    """The input after the least-squares gain and offset on Y."""
    gain, offset = np.polyfit(rainy_y.ravel(), clean_y.ravel(), 1)
    return gain * rainy_y + offset


def filter_fit(rainy_y, clean_y, size=7):
    """The input through the least-squares ``size x size`` linear filter (plus offset); borders kept."""
    half = size // 2
    height, width = rainy_y.shape
    columns = [
        rainy_y[half + dy:height - half + dy, half + dx:width - half + dx].ravel()
        for dy in range(-half, half + 1)
        for dx in range(-half, half + 1)
    ]
    design = np.stack([*columns, np.ones_like(columns[0])], axis=1)
    target = clean_y[half:height - half, half:width - half].ravel()
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    fitted = rainy_y.copy()
    fitted[half:height - half, half:width - half] = (design @ coefficients).reshape(height - 2 * half, width - 2 * half)
    return fitted


def box_mean(image, radius):
    """Mean over the ``(2 radius + 1)^2`` window around each pixel (SciPy's box filter, borders mirrored)."""
    from scipy import ndimage

    return ndimage.uniform_filter(image, 2 * radius + 1, mode="reflect")


def local_additive_fit(rainy_y, clean_y, radius=8):
    """The input plus the box-smoothed difference: the best offset that varies as slowly as the box."""
    return rainy_y + box_mean(clean_y - rainy_y, radius)


def local_affine_fit(rainy_y, clean_y, radius=8, epsilon=25.0):
    """He et al.'s guided filter, guide the rainy Y, target the clean Y: a gain and offset as smooth as the box."""
    mean_rainy, mean_clean = box_mean(rainy_y, radius), box_mean(clean_y, radius)
    covariance = box_mean(rainy_y * clean_y, radius) - mean_rainy * mean_clean
    variance = box_mean(rainy_y * rainy_y, radius) - mean_rainy * mean_rainy
    gain = covariance / (variance + epsilon)
    offset = mean_clean - gain * mean_rainy
    return box_mean(gain, radius) * rainy_y + box_mean(offset, radius)


def pasted(rainy, clean, mask):
    """Clean pixels under ``mask`` (HxWx1 in [0, 1]), rainy elsewhere, as uint8."""
    return np.round(mask * clean + (1.0 - mask) * rainy).astype(np.uint8)


RIGHT_LEVELS = 4.0  # a rainy Y within this many levels of the clean Y needs no repair
MASKED = 0.2  # a model mask over this counts as marked for repair


def false_repair(rainy, clean, derained, model_mask):
    """Where the model repairs pixels that were already right: ``(share, mean Y change, kept)``.

    ``share`` is the fraction of pixels whose rainy Y is within ``RIGHT_LEVELS`` of the clean Y and whose
    ``model_mask`` (HxWx1 in [0, 1]) is over ``MASKED``; ``mean Y change`` is the derained Y minus the rainy
    Y there (nan if none); ``kept`` is ``derained`` with those pixels put back to ``rainy``.

    >>> import numpy as np
    >>> rainy = np.full((2, 2, 3), 100, np.uint8); clean = rainy.copy(); clean[0, 0] = 200
    >>> derained = rainy - 10; mask = np.ones((2, 2, 1))
    >>> share, shift, kept = false_repair(rainy, clean, derained, mask)
    >>> round(share, 2), round(shift, 1), int(kept[0, 0, 0]), int(kept[1, 1, 0])
    (0.75, -10.0, 90, 100)
    """
    rainy_y, clean_y, derained_y = luma(rainy), luma(clean), luma(derained)
    right = (np.abs(rainy_y - clean_y) < RIGHT_LEVELS) & (model_mask[..., 0] > MASKED)
    shift = float(np.mean(derained_y[right] - rainy_y[right])) if right.any() else float("nan")
    return float(right.mean()), shift, np.where(right[..., None], rainy, derained)


def headroom(pair, derainer, masker):
    import tensorflow as tf

    from keras_derain.data.images import read_rgb
    from keras_derain.data.pairs import difference_mask
    from keras_derain.metrics import psnr

    rainy, clean = read_rgb(pair[0]), read_rgb(pair[1])
    rainy_y, clean_y = luma(rainy), luma(clean)
    as_signed = lambda image: tf.constant(image / 127.5 - 1.0, tf.float32)  # noqa: E731
    real_mask = difference_mask(as_signed(rainy), as_signed(clean)).numpy()
    model_mask = masker.derain(rainy)[..., :1] / 255.0
    derained = derainer.derain(rainy)
    right_masked, right_shift, kept = false_repair(rainy, clean, derained, model_mask)
    return {
        "pair": Path(pair[0]).name,
        "input": float(psnr(rainy, clean, 255, y_channel=True)),
        "affine": psnr_luma(affine_fit(rainy_y, clean_y), clean_y),
        "filter7": psnr_luma(filter_fit(rainy_y, clean_y), clean_y),
        "additive8": psnr_luma(local_additive_fit(rainy_y, clean_y), clean_y),
        "affine8": psnr_luma(local_affine_fit(rainy_y, clean_y), clean_y),
        "oracle_diff": float(psnr(pasted(rainy, clean, real_mask), clean, 255, y_channel=True)),
        "oracle_model": float(psnr(pasted(rainy, clean, model_mask), clean, 255, y_channel=True)),
        "model": float(psnr(derained, clean, 255, y_channel=True)),
        "keep_right": float(psnr(kept, clean, 255, y_channel=True)),
        "diff_mask_cover": float(real_mask.mean()),
        "model_mask_cover": float(model_mask.mean()),
        "right_masked": right_masked,
        "right_shift": right_shift,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="restoration", help="a generator with a drop-mask head")
    parser.add_argument("--pairs", default=str(ROOT.parent / "shared" / "data" / "raindrop_real"))
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    args = parser.parse_args(argv)

    from keras_derain.data import find_pairs
    from keras_derain.inference import Derainer

    derainer, masker = Derainer(args.model), Derainer(args.model, output="mask")
    rows = [headroom(pair, derainer, masker) for pair in find_pairs(args.pairs)[: args.limit]]
    keys = ("input", "affine", "filter7", "additive8", "affine8", "oracle_diff", "oracle_model", "model",
            "keep_right", "diff_mask_cover", "model_mask_cover", "right_masked", "right_shift")
    print("| pair | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for row in rows + [{"pair": "mean", **{key: float(np.mean([r[key] for r in rows])) for key in keys}}]:
        print(f"| {row['pair']} | " + " | ".join(f"{row[key]:.2f}" for key in keys) + " |")
    print(json.dumps({"model": args.model, "pairs": args.pairs, "rows": rows}))


if __name__ == "__main__":
    main()
