"""How drops change the scene round them, by distance and by brightness: real Raindrop pairs against renders.

For each pair of ``raindrop_real`` (or a render on the pair's clean image), the
drop mask is ``realism.py``'s (AttentiveGAN's threshold on the difference).
Each pixel outside it gets its distance to the nearest drop pixel, and the
signed change in Y (0-255, ``rainy - clean``, smoothed over 5 px against the
pairs' misalignment) is binned by that distance and by the clean pixel's Y.
The median change of pixels 60 px or more from any drop (the two shots'
exposure difference) is taken off. A gain halo (``clean * (1 + h)``) lifts
bright pixels most; a wash toward a light lifts dark ones most and leaves
bright ones. Medians over pairs (and ``--seeds`` renders per pair).

    python benchmarks/halo_rings.py --style v3+gain '{"halo": 0.4, "halo_reach": 0.04}'

Each ``--style LABEL JSON`` is the v3 window options (``benchmarks/ablation.sh``)
with the JSON's overrides.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

V3 = {
    "radius_range": [0.015, 0.12], "view_tilt_range": [0.2, 0.6], "contrast_range": [0.2, 0.6],
    "haze_range": [0.2, 0.5], "opacity_range": [0.75, 1.0], "density": 0.5, "tail": 0.15,
    "elongation": 1.15, "blur_range": [0.015, 0.05], "shape_noise": 0.08,
}
RINGS = ((1, 4), (4, 10), (10, 25), (25, 40))  # px from the nearest drop pixel, at 720x480
BINS = ((0, 60), (60, 120), (120, 180), (180, 256))  # the clean pixel's Y
FAR = 60


def ring_profile(rainy, clean):
    """``[len(RINGS), len(BINS)]`` median Y change (NaN where a cell has under 300 pixels)."""
    from scipy import ndimage

    from realism import drop_mask, luma

    mask, _ = drop_mask(rainy, clean)
    distance = ndimage.distance_transform_edt(~mask)
    change = ndimage.uniform_filter(luma(rainy) - luma(clean), 5)
    clean_y = luma(clean)
    far = change[distance >= FAR]
    change = change - (np.median(far) if far.size > 1000 else 0.0)
    profile = np.full((len(RINGS), len(BINS)), np.nan)
    for i, (near, out) in enumerate(RINGS):
        ring = (distance >= near) & (distance < out)
        for j, (low, high) in enumerate(BINS):
            cell = ring & (clean_y >= low) & (clean_y < high)
            if cell.sum() > 300:
                profile[i, j] = np.median(change[cell])
    return profile


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", nargs=2, action="append", default=[], metavar=("LABEL", "JSON"),
                        help="a rendered style: v3's window options with these overrides")
    parser.add_argument("--seeds", type=int, default=3, help="renders per pair")
    args = parser.parse_args(argv)

    from realism import read_pairs, render

    pairs = read_pairs("raindrop_real")
    styles = [("real pairs", None), ("v3", {})] + [(label, json.loads(text)) for label, text in args.style]
    print(f"| style | {' | '.join(f'{near}-{out} px' for near, out in RINGS)} |")
    print("| --- |" + " --- |" * len(RINGS))
    for label, overrides in styles:
        profiles = []
        for rainy, clean, _ in pairs:
            if overrides is None:
                profiles.append(ring_profile(rainy, clean))
            else:
                for seed in range(args.seeds):
                    profiles.append(ring_profile(render(clean, {**V3, **overrides}, seed), clean))
        table = np.nanmedian(np.stack(profiles), axis=0)
        cells = [" ".join(f"{value:+.1f}" for value in row) for row in table]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nEach cell: the median Y change in clean-Y bins {', '.join(f'{low}-{high}' for low, high in BINS)}; "
          f"the exposure difference ({FAR}+ px from drops) removed.")


if __name__ == "__main__":
    main()
