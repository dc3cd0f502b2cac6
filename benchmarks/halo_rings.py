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

    python benchmarks/halo_rings.py --options "$v3" --style gain '{"halo": 0.4, "halo_reach": 0.04}'

``--options`` overrides the window style for every rendered row, as in
``realism.py`` (session 18 passed v3's, ``$drops`` of ``benchmarks/ablation.sh``
without its ``dry_fraction``); each ``--style LABEL JSON`` adds its own overrides.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

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
    parser.add_argument("--options", default="{}", help="window-style overrides for every rendered row, as JSON")
    parser.add_argument("--style", nargs=2, action="append", default=[], metavar=("LABEL", "JSON"),
                        help="a rendered row: --options with these overrides")
    parser.add_argument("--seeds", type=int, default=3, help="renders per pair")
    args = parser.parse_args(argv)

    from realism import read_pairs, render

    pairs = read_pairs("raindrop_real")
    base = json.loads(args.options)
    styles = [("real pairs", None), ("base", {})] + [(label, json.loads(text)) for label, text in args.style]
    print(f"| style | {' | '.join(f'{near}-{out} px' for near, out in RINGS)} |")
    print("| --- |" + " --- |" * len(RINGS))
    for label, overrides in styles:
        profiles = []
        for rainy, clean, _ in pairs:
            if overrides is None:
                profiles.append(ring_profile(rainy, clean))
            else:
                for seed in range(args.seeds):
                    profiles.append(ring_profile(render(clean, {**base, **overrides}, seed), clean))
        table = np.nanmedian(np.stack(profiles), axis=0)
        cells = [" ".join(f"{value:+.1f}" for value in row) for row in table]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nEach cell: the median Y change in clean-Y bins {', '.join(f'{low}-{high}' for low, high in BINS)}; "
          f"the exposure difference ({FAR}+ px from drops) removed.")


if __name__ == "__main__":
    main()
