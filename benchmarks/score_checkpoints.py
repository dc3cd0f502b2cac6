"""Score generators (a run's per-epoch checkpoints, or any model files) on what issue #12 asks of a shipped model.

For each model it measures, with the official Y protocol (`keras_derain.evaluate`):
- ``raindrop_real``: mean PSNR-Y / SSIM-Y, and each pair's SSIM-Y against its input's;
- ``raindrop_real_lens``: mean PSNR-Y / SSIM-Y (100 pairs);
- dry photos: PSNR (RGB, dB) of the derained photo against the photo itself, for the clean
  images of both real sets and the built-in photos (the minimum and the mean of each group).
  The shipping rule's lens group is the first 20 lens clean frames (``dry_lens``, for speed); all
  100 are scored too (``dry_lens_all``, with how many are under the bar) and printed beside it.

This is how a model trained on rendered drops only is *selected* on the real pairs; it never
trains on them. Results are cached in ``--out`` (JSON lines), so a rerun scores only new files.

    python benchmarks/score_checkpoints.py ~/runs/rest-ln/epochs/*.keras --out benchmarks/results/rest-ln.jsonl

``--judge`` applies the shipping rule of ``benchmarks/results/restoration.md`` to the last model
named, against the first (the shipped ``default``), and prints the verdict with its reasons, so the
rule is read out by code, not by eye:

    python benchmarks/score_checkpoints.py default ~/runs/rest-dry/mean26-30.keras --out scores.jsonl --judge
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def dry_psnrs(derainer, paths):
    """PSNR (RGB) of each photo against its derained self; 38 dB is the bar for 'unchanged'."""
    from keras_derain.data.images import read_rgb
    from keras_derain.metrics import psnr

    values = []
    for path in paths:
        image = read_rgb(path)
        values.append(float(psnr(derainer.derain(image), image, 255)))
    return values


def dry_summary(values):
    """The worst, the mean, the count and how many are under the bar, of some ``dry_psnrs``."""
    import numpy as np

    return {"min": min(values), "mean": float(np.mean(values)), "n": len(values),
            "under_bar": sum(value < DRY_BAR_DB for value in values)}


def dry_scores(derainer, paths):
    """``dry_summary`` of the photos' ``dry_psnrs``."""
    return dry_summary(dry_psnrs(derainer, paths))


def score(model_path):
    from keras_derain.data import find_pairs
    from keras_derain.evaluate import evaluate
    from keras_derain.inference import Derainer

    derainer = Derainer(model_path)
    row = {"model": str(model_path)}
    window = evaluate(derainer, find_pairs(SHARED / "raindrop_real"))
    lens = evaluate(derainer, find_pairs(SHARED / "raindrop_real_lens"))
    for name, result in (("window", window), ("lens", lens)):
        for side in ("input", "model"):
            for key in ("psnr_y", "ssim_y"):
                row[f"{name}_{side}_{key}"] = result["means"][side][key]
    row["window_ssim_each"] = [(image["input_ssim_y"], image["model_ssim_y"]) for image in window["images"]]
    builtin = sorted((ROOT / "keras_derain" / "data" / "builtin").glob("*.jpg"))
    row["dry_builtin"] = dry_scores(derainer, builtin)
    row["dry_window"] = dry_scores(derainer, [clean for _, clean in find_pairs(SHARED / "raindrop_real")])
    lens = dry_psnrs(derainer, [clean for _, clean in find_pairs(SHARED / "raindrop_real_lens")])
    row["dry_lens"], row["dry_lens_all"] = dry_summary(lens[:20]), dry_summary(lens)  # each frame derained once
    return row


def line(row):
    gain_w = row["window_model_psnr_y"] - row["window_input_psnr_y"]
    gain_l = row["lens_model_psnr_y"] - row["lens_input_psnr_y"]
    each = all(model >= before for before, model in row["window_ssim_each"])
    return (f"| {Path(row['model']).name} | {row['window_model_psnr_y']:.2f} / {row['window_model_ssim_y']:.4f} "
            f"| {gain_w:+.2f} dB, SSIM each >= input: {'yes' if each else 'no'} "
            f"| {row['lens_model_psnr_y']:.2f} / {row['lens_model_ssim_y']:.4f} "
            f"| {gain_l:+.2f} dB / {row['lens_model_ssim_y'] - row['lens_input_ssim_y']:+.4f} "
            f"| {row['dry_builtin']['min']:.1f} / {row['dry_window']['min']:.1f} / {row['dry_lens']['min']:.1f} "
            f"| {all_lens(row)} |")


def all_lens(row):
    """The worst of all 100 lens clean frames and how many are under the bar ('-' in rows cached before)."""
    every = row.get("dry_lens_all")
    return f"{every['min']:.1f} ({every['under_bar']} under {DRY_BAR_DB:.0f})" if every else "-"


DRY_BAR_DB = 38.0  # issue #12: a dry photo comes out within this PSNR of itself
MARGIN_DB = 0.5  # how far under the default a named, dry-safe built-in may score on each real set


def verdict(candidate, default, rule="higher-builtin"):
    """Apply the shipping rule to two score rows; returns ``("default" | "dry-safe" | "none", reasons)``.

    - ``"default"``: the candidate beats ``default`` on both real sets (mean PSNR-Y), keeps SSIM-Y
      above the input on each Raindrop pair and on the lens pairs, and, by ``rule``:
      ``"higher-builtin"`` (sessions 16-26), its built-in dry minimum is higher than ``default``'s;
      ``"bars"`` (session 27), every dry group is at the 38 dB bar or over it and **none** of the 100
      lens clean frames is under it (issue #12's own dry bar; a row without them fails).
    - ``"dry-safe"``: else, if it meets the dry bar on all three dry groups, keeps SSIM-Y above the
      input as above, and scores within ``MARGIN_DB`` of ``default`` on both real sets.
    - ``"none"``: otherwise.

    >>> row = {"window_model_psnr_y": 20.7, "lens_model_psnr_y": 13.9, "window_input_psnr_y": 19.0,
    ...        "lens_input_psnr_y": 13.4, "lens_model_ssim_y": 0.59, "lens_input_ssim_y": 0.57,
    ...        "window_ssim_each": [[0.80, 0.81], [0.78, 0.79]],
    ...        "dry_builtin": {"min": 27.9}, "dry_window": {"min": 50.7}, "dry_lens": {"min": 32.7}}
    >>> dry = dict(row, window_model_psnr_y=20.6, dry_builtin={"min": 56.5}, dry_lens={"min": 44.7})
    >>> verdict(dry, row)[0]
    'dry-safe'
    """
    ssim_ok = (all(model > before for before, model in candidate["window_ssim_each"])
               and candidate["lens_model_ssim_y"] > candidate["lens_input_ssim_y"])
    gains = {name: candidate[f"{name}_model_psnr_y"] - default[f"{name}_model_psnr_y"] for name in ("window", "lens")}
    dry = {name: candidate[f"dry_{name}"]["min"] for name in ("builtin", "window", "lens")}
    reasons = [f"{name}: {gain:+.2f} dB against default" for name, gain in gains.items()]
    reasons.append("SSIM-Y above the input on each Raindrop pair and on lens: " + ("yes" if ssim_ok else "no"))
    reasons.append("dry minima: " + " / ".join(f"{name} {value:.1f}" for name, value in dry.items())
                   + f" dB (default's built-in {default['dry_builtin']['min']:.1f})")
    if rule == "bars":
        every = candidate.get("dry_lens_all", {"under_bar": None})["under_bar"]
        reasons.append(f"all 100 lens clean frames: {every} under the bar")
        dry_ok = every == 0 and all(value >= DRY_BAR_DB for value in dry.values())
    elif rule == "higher-builtin":
        dry_ok = dry["builtin"] > default["dry_builtin"]["min"]
    else:
        raise ValueError(f"rule must be 'higher-builtin' or 'bars', got {rule!r}")
    if all(gain > 0 for gain in gains.values()) and ssim_ok and dry_ok:
        return "default", reasons
    if (all(value >= DRY_BAR_DB for value in dry.values()) and ssim_ok
            and all(gain >= -MARGIN_DB for gain in gains.values())):
        return "dry-safe", reasons
    return "none", reasons


HEADER = ("| model | raindrop_real PSNR-Y / SSIM-Y | change | lens PSNR-Y / SSIM-Y | change "
          "| dry min dB (built-in / window clean / first 20 lens clean) | all 100 lens clean: min dB (under the bar) |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files (.keras, .npz, built-in names)")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines cache of the scores")
    parser.add_argument("--judge", action="store_true",
                        help="apply the shipping rule to the last model against the first (see verdict())")
    parser.add_argument("--rule", choices=("higher-builtin", "bars"), default="higher-builtin",
                        help="the default slot's dry clause (see verdict()); bars: session 27's rule")
    args = parser.parse_args(argv)
    if args.judge and len(args.models) < 2:
        parser.error("--judge needs two models: the shipped default first, the candidate last")
    if not (SHARED / "raindrop_real").is_dir():
        print(f"error: {SHARED}: the shared real pairs are not here", file=sys.stderr)
        return 2
    done = {}
    if args.out.exists():
        for text in args.out.read_text().splitlines():
            row = json.loads(text)
            done[row["model"]] = row
    for model in args.models:
        if str(model) in done:
            continue
        started = time.perf_counter()
        row = score(model)
        row["seconds"] = round(time.perf_counter() - started, 1)
        done[str(model)] = row
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    print(HEADER)
    for model in args.models:
        print(line(done[str(model)]))
    if args.judge:
        name, reasons = verdict(done[str(args.models[-1])], done[str(args.models[0])], rule=args.rule)
        print(f"\nverdict for {args.models[-1]}: {name}")
        for reason in reasons:
            print(f"- {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
