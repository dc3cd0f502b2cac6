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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="built-in model names or generator files")
    args = parser.parse_args(argv)
    from keras_derain.data import find_pairs

    pairs = find_pairs(SHARED / "raindrop_real_lens")
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
