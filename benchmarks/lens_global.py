"""Split a generator's PSNR-Y change on the lens pairs into its mean shift and its local changes.

For each pair of ``raindrop_real_lens``, over the whole frame (not the official protocol's border
handling, so levels differ from ``evaluate``'s; compare models with one another):

- ``model``: PSNR-Y of the output against the clean frame;
- ``shift alone``: the rainy frame plus the output's mean Y change (what a global offset gives);
- ``local alone``: the output with its mean Y change taken back (what everything else gives);
- the median mean shift (against the clean frame's, median -14 levels), its correlation with the
  clean frame's over the pairs, and the median ratio of the output's Y standard deviation to the
  rainy frame's (below 1: the model lowers contrast).

    python benchmarks/lens_global.py default restoration ~/runs/s10/v1s1.keras

``--oracles`` (no model needed) asks how much of the lens deficit a *global* correction could
remove, and whether the rainy frame alone tells how much: per pair, the least-squares gain and
offset of the clean Y on the rainy Y (an oracle), the offset alone (the clean mean), the fitted
gain's median, the rainy-clean Y correlation; then a leave-one-out ridge regression from
statistics of the rainy frame (mean, std, Y percentiles, dark channel, gradient) to that gain
and offset, applied to the held-out pair and, as a dry photo, to its clean frame:

    python benchmarks/lens_global.py --oracles
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def luma(image):
    """ITU-R BT.601 Y (16-235) of an RGB uint8 image, as float64."""
    import numpy as np

    image = image.astype(np.float64)
    return 16 + (65.481 * image[..., 0] + 128.553 * image[..., 1] + 24.966 * image[..., 2]) / 255


def psnr(a, b):
    """PSNR of two Y planes (H x W floats), by the project's metric."""
    from keras_derain.metrics import psnr as image_psnr

    return float(image_psnr(a[..., None], b[..., None], 255))


def split(model, pairs):
    """Mean figures of ``model`` over ``pairs``, as described in the module docstring."""
    import numpy as np

    from keras_derain.data import read_rgb
    from keras_derain.inference import Derainer

    derainer = Derainer(model)
    rows = []
    for rainy_path, clean_path in pairs:
        rainy, clean = read_rgb(rainy_path), read_rgb(clean_path)
        y_rainy, y_clean, y_out = luma(rainy), luma(clean), luma(derainer.derain(rainy))
        shift = y_out.mean() - y_rainy.mean()
        rows.append((psnr(y_rainy, y_clean), psnr(y_out, y_clean), psnr(y_rainy + shift, y_clean),
                     psnr(y_out - shift, y_clean), shift, y_clean.mean() - y_rainy.mean(), y_out.std() / y_rainy.std()))
    a = np.array(rows)
    return {"input": a[:, 0].mean(), "model": a[:, 1].mean(), "shift alone": a[:, 2].mean(),
            "local alone": a[:, 3].mean(), "median shift": np.median(a[:, 4]), "median clean shift": np.median(a[:, 5]),
            "shift correlation": np.corrcoef(a[:, 4], a[:, 5])[0, 1], "median std ratio": np.median(a[:, 6])}


def _frame_statistics(y, rgb):
    """What a global correction could be predicted from: Y level and spread, percentiles, dark channel, gradient."""
    import numpy as np

    dark = rgb.min(axis=-1)
    gradient = np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()
    return np.array([y.mean(), y.std(), *np.percentile(y, [1, 5, 25, 50, 75, 95, 99]), dark.mean(),
                     np.percentile(dark, 5), gradient])


def oracles(pairs, ridge=1.0):
    """The ``--oracles`` figures (module docstring), whole-frame PSNR-Y means over ``pairs``."""
    import numpy as np

    from keras_derain.data import read_rgb

    frames, rainy_stats, clean_stats, fits = [], [], [], []
    for rainy_path, clean_path in pairs:
        rainy, clean = read_rgb(rainy_path), read_rgb(clean_path)
        y_rainy, y_clean = luma(rainy), luma(clean)
        design = np.stack([y_rainy.ravel(), np.ones(y_rainy.size)], axis=1)
        gain, offset = np.linalg.lstsq(design, y_clean.ravel(), rcond=None)[0]
        frames.append((y_rainy, y_clean))
        rainy_stats.append(_frame_statistics(y_rainy, rainy.astype(np.float64)))
        clean_stats.append(_frame_statistics(y_clean, clean.astype(np.float64)))
        fits.append((gain, offset))
    rainy_stats, clean_stats, fits = np.array(rainy_stats), np.array(clean_stats), np.array(fits)
    result = {
        "input": np.mean([psnr(r, c) for r, c in frames]),
        "gain + offset (oracle)": np.mean([psnr(g * r + o, c) for (r, c), (g, o) in zip(frames, fits)]),
        "offset alone (oracle)": np.mean([psnr(r + c.mean() - r.mean(), c) for r, c in frames]),
        "median fitted gain": np.median(fits[:, 0]),
        "median std ratio clean / rainy": np.median([c.std() / r.std() for r, c in frames]),
        "median correlation": np.median([np.corrcoef(r.ravel(), c.ravel())[0, 1] for r, c in frames]),
    }
    for with_dry in (False, True):
        wet_scores, dry_scores = [], []
        for held in range(len(pairs)):
            keep = [index for index in range(len(pairs)) if index != held]
            features, targets = rainy_stats[keep], fits[keep]
            if with_dry:  # the clean frames too, each with the identity as its target
                features = np.vstack([features, clean_stats[keep]])
                targets = np.vstack([targets, np.tile([1.0, 0.0], (len(keep), 1))])
            mean, scale = features.mean(0), features.std(0) + 1e-9

            def design(f):
                return np.hstack([np.ones((len(f), 1)), (f - mean) / scale])

            z = design(features)
            weights = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ targets)
            y_rainy, y_clean = frames[held]
            gain, offset = (design(rainy_stats[held : held + 1]) @ weights)[0]
            wet_scores.append(psnr(np.clip(gain * y_rainy + offset, 0, 255), y_clean))
            gain, offset = (design(clean_stats[held : held + 1]) @ weights)[0]
            dry_scores.append(psnr(np.clip(gain * y_clean + offset, 0, 255), y_clean))
        label = "predicted, fitted with the clean frames as dry examples" if with_dry else "predicted"
        result[label] = np.mean(wet_scores)
        result[label + ": dry frames min / median dB"] = (np.min(dry_scores), np.median(dry_scores))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="built-in model names or generator files")
    parser.add_argument("--oracles", action="store_true", help="the global-correction oracles and predictions")
    args = parser.parse_args(argv)
    from keras_derain.data import find_pairs

    pairs = find_pairs(SHARED / "raindrop_real_lens")
    if args.oracles:
        for name, value in oracles(pairs).items():
            shown = " / ".join(f"{v:.1f}" for v in value) if isinstance(value, tuple) else f"{value:.3f}"
            print(f"| {name} | {shown} |")
    if not args.models:
        return 0
    print("| model | input | model | shift alone | local alone | median shift (clean) | shift correlation | std ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        r = split(model, pairs)
        print(f"| {Path(model).name} | {r['input']:.2f} | {r['model']:.2f} | {r['shift alone']:.2f} | {r['local alone']:.2f} "
              f"| {r['median shift']:+.1f} ({r['median clean shift']:+.1f}) | {r['shift correlation']:.2f} "
              f"| {r['median std ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
