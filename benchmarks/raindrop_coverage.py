"""Raindrop coverage: the fraction of a photo that drops visibly change, real and rendered.

Method (the same for the real pairs and for rendered ones, so the figures compare):

1. Colour match: the real rainy and clean shots differ in exposure, so the clean
   image is mapped to the rainy one by a per-channel linear fit, refitted three
   times on the 60% of pixels that differ least (drops would bias a plain fit).
2. Blur both by a 5x5 box: drops are smooth; noise and texture are not.
3. Misalignment tolerance: a pixel differs by how far the rainy value lies outside
   the [min, max] of the matched clean image over a 7x7 window (shifts up to 3 px).
4. Threshold the channel-mean difference at 0.04 (about 10 grey levels), then
   open with a 5x5 square to drop thin lines left by moving foliage.

The real pairs are from the Raindrop dataset's train split (../shared/data/raindrop_real).
The script also renders the default drops onto the real pairs' clean images and onto the
built-in images (256 crops) and measures them the same way. Run:

    python benchmarks/raindrop_coverage.py
"""

from pathlib import Path
import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "raindrop_real"
THRESHOLD = 0.04
TOLERANCE = 3
BLUR = 5
OPENING = 5


def match_colour(rainy, clean, iterations=3, keep=0.6):
    """``clean`` mapped per channel by ``a * clean + b`` to fit ``rainy`` (robustly)."""
    chosen = np.ones(rainy.shape[:2], bool)
    for _ in range(iterations):
        matched = np.empty_like(clean)
        for channel in range(3):
            design = np.stack([clean[..., channel][chosen], np.ones(chosen.sum())], axis=1)
            (scale, offset), *_ = np.linalg.lstsq(design, rainy[..., channel][chosen], rcond=None)
            matched[..., channel] = scale * clean[..., channel] + offset
        difference = np.abs(rainy - matched).mean(axis=-1)
        chosen = difference <= np.quantile(difference, keep)
    return matched


def changed_pixels(rainy, clean, *, match=True):
    """Boolean HxW map of pixels that drops visibly change (method in the module docstring)."""
    import tensorflow as tf

    rainy = np.asarray(rainy, np.float32)
    clean = np.asarray(clean, np.float32)
    if match:
        clean = match_colour(rainy, clean)
    rainy = tf.nn.avg_pool2d(rainy[None], BLUR, 1, "SAME")
    clean = tf.nn.avg_pool2d(clean[None], BLUR, 1, "SAME")
    window = 2 * TOLERANCE + 1
    upper = tf.nn.max_pool2d(clean, window, 1, "SAME")
    lower = -tf.nn.max_pool2d(-clean, window, 1, "SAME")
    distance = tf.reduce_mean(tf.nn.relu(rainy - upper) + tf.nn.relu(lower - rainy), axis=-1, keepdims=True)
    changed = tf.cast(distance > THRESHOLD, tf.float32)
    changed = -tf.nn.max_pool2d(-changed, OPENING, 1, "SAME")  # erode
    changed = tf.nn.max_pool2d(changed, OPENING, 1, "SAME")  # dilate
    return changed[0, ..., 0].numpy() > 0.5


def coverage(rainy, clean, *, match=True):
    """Fraction of pixels that drops visibly change."""
    return float(changed_pixels(rainy, clean, match=match).mean())


def real_pairs(root=SHARED_REAL):
    """``[(rainy, clean), ...]`` float arrays in [0, 1] from ``root/data`` and ``root/gt``."""
    from keras_derain.data.images import read_rgb

    pairs = []
    for rainy_path in sorted((root / "data").glob("*_rain.png")):
        clean_path = root / "gt" / rainy_path.name.replace("_rain", "_clean")
        pairs.append((read_rgb(rainy_path) / 255.0, read_rgb(clean_path) / 255.0))
    return pairs


def rendered_coverages(cleans, seeds, **options):
    """Coverage of the default (or given) drops rendered onto each clean image, per seed."""
    from keras_derain.data.raindrops import render_raindrops

    figures = []
    for clean in cleans:
        for seed in seeds:
            rainy = render_raindrops(np.float32(clean), seed=seed, **options).numpy()
            figures.append(coverage(rainy, clean, match=False))
    return figures


def builtin_crops(size=256, count=10):
    from keras_derain.data.images import read_rgb
    from keras_derain.data.synthetic import builtin_clean_images

    crops = []
    for path in builtin_clean_images()[:count]:
        image = read_rgb(path) / 255.0
        top = (image.shape[0] - size) // 2
        left = (image.shape[1] - size) // 2
        crops.append(image[top : top + size, left : left + size])
    return crops


def main():
    sys.path.insert(0, str(REPO))
    if not SHARED_REAL.is_dir():
        print(f"skipped: {SHARED_REAL} is absent (a fresh clone has no ../shared)")
        return 0
    pairs = real_pairs()
    real = [coverage(rainy, clean) for rainy, clean in pairs]
    for index, figure in enumerate(real):
        print(f"real pair {index}: {figure:.3f} of pixels visibly changed")
    print(f"real range: {min(real):.3f} - {max(real):.3f}")

    on_real = rendered_coverages([clean for _, clean in pairs], seeds=range(4))
    print(f"default drops on the real clean images (720x480): mean {np.mean(on_real):.3f}, "
          f"range {min(on_real):.3f} - {max(on_real):.3f}")
    on_builtin = rendered_coverages(builtin_crops(), seeds=range(2))
    print(f"default drops on built-in 256 crops: mean {np.mean(on_builtin):.3f}, "
          f"range {min(on_builtin):.3f} - {max(on_builtin):.3f}")
    for density in (0.1, 0.2, 0.3, 0.45, 0.6):
        figures = rendered_coverages(builtin_crops(count=4), seeds=range(2), density=density)
        print(f"density {density:.2f}: coverage {np.mean(figures):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
