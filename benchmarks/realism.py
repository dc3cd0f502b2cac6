"""Realism of the rendered drops: statistics of real and rendered drops on the same clean photos.

For each real pair of a shared set, the renderer draws drops on the pair's
*clean* image, and the same detector finds the drops in the real rainy image
and in the rendered one, so the two are measured alike:

Drop mask (AttentiveGAN's rule, made robust to what differs between two real shots):

1. Exposure: the real rainy and clean shots differ in exposure and colour, so
   the clean image is first mapped to the rainy one by a per-channel linear
   fit, refitted three times on the 60% of pixels that differ least
   (``raindrop_coverage.match_colour``).
2. Misalignment: both are blurred by a 5x5 box, and a pixel's difference is how
   far the rainy value lies outside the ``[min, max]`` of the matched clean
   image over a 7x7 window, so shifts of up to 3 px (Raindrop pairs are
   aligned within 0.2 px; the lens pairs come from two cameras) and the
   foliage that moved between the shots do not count as drops.
3. AttentiveGAN's threshold: the difference summed over the channels is at
   least 35 (of 3 x 255), then a 5x5 close and a 5x5 open.

Statistics of the mask, per pair (a set is summarised by the median over its
pairs, robust to the odd pair whose detector output is degenerate):

- ``coverage``: the fraction of the frame inside drops;
- ``drops_per_mp``: connected drops (at least 9 px) per megapixel;
- ``median_area`` / ``p90_area``: the drop areas, in px of the frame;
- ``y_change``: the mean signed change of Y (0-255) inside drops;
- ``brighter_share``: the share of drops whose mean Y is above that of a
  6 px ring around them, in the rainy image;
- ``sharpness``: mean |gradient of Y| of the rainy image inside drops over that
  of the clean scene at the same pixels (1: as sharp as the scene).

The real set gives a range (its pairs' minimum and maximum) and its median; the
rendered statistic (the median over its renders) passes if it lies in that range, or within 30% of the real
value when the set has one pair. Raindrop pairs are compared with the default
(window) style, the lens pairs with the lens style. Writes
``benchmarks/results/realism.md`` and, with ``--figure``, the README figure of
real and rendered drops on the same clean photos.

Usage:
    python benchmarks/realism.py
    python benchmarks/realism.py --seeds 3 --figure notebooks/images/raindrops_real_vs_rendered.jpg
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
THRESHOLD = 35.0 / 255.0  # summed over the 3 channels, as AttentiveGAN
BLUR, TOLERANCE, MORPHOLOGY, MIN_AREA, RING = 5, 3, 5, 9, 6
STATISTICS = ("coverage", "drops_per_mp", "median_area", "p90_area", "y_change", "brighter_share", "sharpness")
SETS = {"raindrop_real": "window", "raindrop_real_lens": "lens"}


def _coverage_module():
    spec = importlib.util.spec_from_file_location("raindrop_coverage", ROOT / "benchmarks" / "raindrop_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def luma(image):
    return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]) * 255.0


def drop_mask(rainy, clean):
    """Boolean HxW drop mask and the colour-matched clean image (method in the module docstring)."""
    matched = _coverage_module().match_colour(rainy, clean)
    blurred_rainy = ndimage.uniform_filter(rainy, (BLUR, BLUR, 1))
    blurred_clean = ndimage.uniform_filter(matched, (BLUR, BLUR, 1))
    window = (2 * TOLERANCE + 1, 2 * TOLERANCE + 1, 1)
    upper = ndimage.maximum_filter(blurred_clean, window)
    lower = ndimage.minimum_filter(blurred_clean, window)
    distance = (np.maximum(blurred_rainy - upper, 0) + np.maximum(lower - blurred_rainy, 0)).sum(axis=-1)
    mask = distance >= THRESHOLD
    square = np.ones((MORPHOLOGY, MORPHOLOGY), bool)
    mask = ndimage.binary_opening(ndimage.binary_closing(mask, square), square)
    return mask, matched


def drop_statistics(rainy, clean):
    """The statistics of the module docstring for one pair (float HxWx3 in [0, 1])."""
    mask, matched = drop_mask(rainy, clean)
    labels, count = ndimage.label(mask)
    areas = np.bincount(labels.ravel())[1:]
    kept = np.flatnonzero(areas >= MIN_AREA) + 1
    height, width = mask.shape
    y_rainy, y_clean = luma(rainy), luma(matched)
    stats = {
        "coverage": float(mask.mean()),
        "drops_per_mp": len(kept) / (height * width / 1e6),
        "median_area": float(np.median(areas[kept - 1])) if len(kept) else 0.0,
        "p90_area": float(np.percentile(areas[kept - 1], 90)) if len(kept) else 0.0,
        "y_change": float((y_rainy - y_clean)[mask].mean()) if mask.any() else 0.0,
    }
    brighter = []
    boxes = ndimage.find_objects(labels)
    for label in kept:
        # Only the drop's bounding box, grown by the ring's width, is looked at.
        rows, cols = boxes[label - 1]
        box = (slice(max(rows.start - RING, 0), rows.stop + RING), slice(max(cols.start - RING, 0), cols.stop + RING))
        drop = labels[box] == label
        ring = ndimage.binary_dilation(drop, iterations=RING) & ~mask[box]
        if ring.any():
            brighter.append(y_rainy[box][drop].mean() > y_rainy[box][ring].mean())
    stats["brighter_share"] = float(np.mean(brighter)) if brighter else 0.0
    gradient_rainy = np.hypot(*np.gradient(y_rainy))
    gradient_clean = np.hypot(*np.gradient(y_clean))
    # Floored at one grey level per pixel: drops on a flat sky would divide by ~0.
    stats["sharpness"] = (
        float(gradient_rainy[mask].mean() / max(gradient_clean[mask].mean(), 1.0)) if mask.any() else 0.0
    )
    return stats


def read_pairs(real_set):
    from keras_derain.data import find_pairs, read_rgb

    return [
        (read_rgb(rainy) / 255.0, read_rgb(clean) / 255.0, rainy.stem)
        for rainy, clean in find_pairs(SHARED / real_set)
    ]


def render(clean, style, seed, reference_side=480):
    from keras_derain.data.raindrops import render_raindrops

    # Sizes as on a 720x480 frame, as synthetic_dataset draws them on training crops (its reference_side).
    return render_raindrops(
        np.float32(clean), seed=seed, options=style, reference_side=reference_side, dry_fraction=0.0
    ).numpy()


def compare(real_set, style, seeds, reference_side=480):
    pairs = read_pairs(real_set)
    real = [drop_statistics(rainy, clean) for rainy, clean, _ in pairs]
    rendered = [
        drop_statistics(render(clean, style, seed, reference_side), clean)
        for index, (_, clean, _) in enumerate(pairs)
        for seed in range(index * 1000, index * 1000 + seeds)
    ]
    rows = []
    for name in STATISTICS:
        values = np.array([stats[name] for stats in real])
        low, high, mean = float(values.min()), float(values.max()), float(np.median(values))
        ours = float(np.median([stats[name] for stats in rendered]))
        if len(values) > 1:
            passed = low <= ours <= high
        else:
            passed = abs(ours - mean) <= 0.3 * abs(mean)
        rows.append({"statistic": name, "real_min": low, "real_max": high, "real_mean": mean,
                     "rendered": ours, "pass": passed})
    return rows, len(pairs)


def table(real_set, style, rows, pairs, seeds):
    lines = [
        f"### `{real_set}` ({pairs} real pairs) against the `{style}` style ({seeds} render(s) per pair)",
        "",
        "| statistic | real min | real max | real median | rendered (median) | within the real range |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['statistic']} | {row['real_min']:.3f} | {row['real_max']:.3f} | {row['real_mean']:.3f} "
            f"| {row['rendered']:.3f} | {'yes' if row['pass'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def figure(path, seed=3):
    """Clean | real rainy | rendered, on the same clean photo: a Raindrop pair and two lens pairs."""
    from PIL import Image, ImageDraw

    rows = []
    for real_set, index, size in (("raindrop_real", 1, (480, 320)), ("raindrop_real_lens", 3, (320, 320)),
                                  ("raindrop_real_lens", 42, (320, 320))):
        rainy, clean, _ = [pair for pair in read_pairs(real_set) if pair[2] == f"{index}_rain"][0]
        rendered = render(clean, SETS[real_set], seed)
        panels = [Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255 + 0.5)).resize(size, Image.LANCZOS)
                  for image in (clean, rainy, rendered)]
        rows.append(panels)
    width = max(sum(panel.width for panel in row) for row in rows)
    height = sum(row[0].height for row in rows) + 24
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(("clean", "real drops", "rendered drops")):
        draw.text((column * rows[0][0].width + 6, 6), title, fill="black")
    top = 24
    for row in rows:
        left = 0
        for panel in row:
            sheet.paste(panel, (left, top))
            left += panel.width
        top += row[0].height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=88)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="renders per Raindrop pair (lens pairs: 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "realism.md")
    parser.add_argument("--figure", type=Path, help="also write the real-against-rendered figure here")
    parser.add_argument("--options", default="{}",
                        help="overrides of the window style, as JSON, to try candidate defaults")
    parser.add_argument("--lens-options", default="{}",
                        help="overrides of the lens style, as JSON, to try candidate defaults")
    parser.add_argument("--reference-side", type=int, default=480, metavar="PX",
                        help="the short side the drop sizes are fractions of (train.py --reference-side)")
    parser.add_argument("--sets", nargs="+", choices=tuple(SETS), default=tuple(SETS), help="real sets to compare")
    args = parser.parse_args(argv)
    overrides = {"window": json.loads(args.options), "lens": json.loads(args.lens_options)}
    from keras_derain.data.raindrops import raindrop_options
    if not SHARED.is_dir():
        print(f"error: {SHARED} is missing: the real pairs are needed", file=sys.stderr)
        return 2
    text = [
        "# Realism: real and rendered drops on the same clean photos",
        "",
        "`python benchmarks/realism.py` (method in its docstring: AttentiveGAN's mask rule after a robust",
        "colour match and a 3 px misalignment tolerance). Each rendered value is the median over the renders",
        "of drops on each real pair's clean image; it passes if it lies within the real pairs' range.",
        "",
    ]
    results = {}
    for real_set in args.sets:
        style = SETS[real_set]
        changed = overrides[style]
        if changed:
            style = {**dataclasses.asdict(raindrop_options(style)), **changed}
        seeds = args.seeds if real_set == "raindrop_real" else 1
        rows, pairs = compare(real_set, style, seeds, args.reference_side)
        results[real_set] = rows
        label = SETS[real_set] + (f" {json.dumps(changed)}" if changed else "")
        label += f" (sizes against {args.reference_side} px)" if args.reference_side != 480 else ""
        text.append(table(real_set, label, rows,
                          pairs, seeds))
        print(text[-1])
    args.out.write_text("\n".join(text))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    if args.figure:
        figure(args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
