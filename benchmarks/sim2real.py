"""Sim-to-real benchmark: train one fixed small model on rendered drops, score it on real drops.

The renderer is judged by what it teaches a model. One configuration, fixed
seed, fixed budget: Pix2Pix with the study's penalties (32 channels, 128 crops,
batch 8), 2,000 steps on synthetic drops rendered on ``../shared/data/clean``
(every photo in its nested folders; never a real pair). The generator is then
scored with the official Y protocol (``keras_derain.evaluate``) on both shared
real sets, against the rainy input:

- ``raindrop_real``: 2 Raindrop pairs (720x480, whole frames);
- ``raindrop_real_lens``: 100 RobotCar lens pairs (256x256).

One row per run is appended to ``benchmarks/results/sim2real.md`` (the label,
the commit, the renderer options, the seconds and the machine), and the raw
numbers to ``benchmarks/results/sim2real.jsonl``.

Usage:
    python benchmarks/sim2real.py --label "v1 renderer" --seed 0
    python benchmarks/sim2real.py --label "v2" --options '{"dry_fraction": 0.1}'
    python benchmarks/sim2real.py --label "v2, no lens batches" --lens-fraction 0
    python benchmarks/sim2real.py --steps 20 --out /tmp/smoke.md   # a smoke test
    python benchmarks/sim2real.py --label "v1, restoration" --arch restoration --renderer-commit 5781748 \
        --lens-fraction 0   # an old renderer in a configuration that did not exist at its commit

With ``--options`` the lens-style batches are off unless ``--lens-fraction`` is given
(as in ``synthetic_dataset``).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

from machine import describe  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
SETS = ("raindrop_real", "raindrop_real_lens")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="what this row measures (e.g. the renderer version)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000, help="training steps (the fixed budget: 2000)")
    parser.add_argument("--options", default="{}", help="RaindropOptions overrides, as JSON")
    parser.add_argument("--lens-options", default="{}", help="overrides of the lens style for the lens batches, as JSON")
    parser.add_argument("--lens-fraction", type=float,
                        help="share of lens-style batches (default: synthetic_dataset's)")
    parser.add_argument("--reference-side", type=int, default=480, metavar="PX",
                        help="the short side the drop sizes are fractions of (synthetic_dataset's)")
    parser.add_argument("--lens-reference-side", type=int, metavar="PX",
                        help="the same for the lens batches alone (default: --reference-side)")
    parser.add_argument("--sky-fraction", type=float, default=0.0, metavar="F",
                        help="share of crops given a procedural cloudy sky (synthetic_dataset's; default 0)")
    parser.add_argument("--clean", type=Path, default=SHARED / "clean", help="clean photos (nested folders)")
    parser.add_argument("--out", type=Path, default=RESULTS / "sim2real.md")
    parser.add_argument("--keep", type=Path, help="also save the trained generator here (.keras)")
    parser.add_argument("--model", type=Path,
                        help="score this generator (a --keep file) instead of training one; --train-seconds "
                        "gives its training time")
    parser.add_argument("--train-seconds", type=float, default=float("nan"))
    parser.add_argument("--arch", default="pix2pix", choices=("pix2pix", "restoration"),
                        help="pix2pix: the fixed configuration that judges renderers; restoration: the "
                        "mask-guided generator, for the generator ablation")
    parser.add_argument("--crop-view", action="store_true",
                        help="drops refract a view of the crop alone, not of the whole photo (synthetic_dataset "
                             "wide_view=False)")
    parser.add_argument("--renderer-commit", metavar="REV",
                        help="draw the drops with keras_derain/data/raindrops.py as of this commit (its defaults), "
                             "through today's pipeline; needs --lens-fraction 0 and no --options")
    parser.add_argument("--config", default="{}",
                        help="preset overrides as JSON (e.g. '{\"ssim_weight\": 0}'), for ablations")
    return parser.parse_args(argv)


def clean_photos(folder):
    """Every image under ``folder``, recursively, sorted: the renderer's backgrounds."""
    suffixes = {".png", ".jpg", ".jpeg"}
    return sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in suffixes)


def train_config(arch="pix2pix", seed=0, overrides=None):
    """The benchmark's fixed configuration: Pix2Pix + penalties at 32 channels, or the restoration preset."""
    from keras_derain.presets import resolve

    if arch == "pix2pix":
        config = resolve("pix2pix", penalties=True, crop_size=128, base_channels=32, batch_size=8, seed=seed)
    else:
        config = resolve(arch, crop_size=128, batch_size=8, seed=seed)
    config.update(overrides or {})
    return resolve(config.pop("arch"), **config)


def legacy_renderer(rev):
    """``render_raindrops`` of ``keras_derain/data/raindrops.py`` as of commit ``rev`` (read with ``git show``).

    It is called the way today's ``synthetic_dataset`` calls the renderer, with
    the old module's default options; the wide-view arguments it did not have
    (``environment``, ``window``) and today's options are dropped.

    Raises:
        ValueError: ``rev`` is unknown or has no such file (the message names it).
    """
    import types

    import tensorflow as tf

    result = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:keras_derain/data/raindrops.py"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"--renderer-commit {rev}: no keras_derain/data/raindrops.py there ({result.stderr.strip()})")
    module = types.ModuleType(f"raindrops_{rev}")
    exec(compile(result.stdout, f"{rev}:keras_derain/data/raindrops.py", "exec"), module.__dict__)

    @tf.autograph.experimental.do_not_convert  # its source is not a file AutoGraph can read; plain TF ops
    def render_raindrops(clean, *, seed, reference_side=None, return_mask=False, **_today):
        return module.render_raindrops(clean, seed=seed, reference_side=reference_side, return_mask=return_mask)

    return render_raindrops


def train_generator(paths, options, seed, steps, lens_fraction=None, config=None, lens_options=None,
                    reference_side=480, lens_reference_side=None, sky_fraction=0.0, renderer_commit=None,
                    wide_view=True):
    import contextlib
    from unittest import mock

    import keras

    from keras_derain.data.synthetic import synthetic_dataset
    from keras_derain.training import build_gan, wants_mask

    config = config or train_config(seed=seed)
    keras.utils.set_random_seed(seed)
    gan = build_gan(config)
    swap = contextlib.nullcontext()
    if renderer_commit:
        from keras_derain.data import synthetic

        # The map is traced when the dataset is built, so the swap need only last that long.
        swap = mock.patch.object(synthetic.raindrops, "render_raindrops", legacy_renderer(renderer_commit))
    with swap:
        train = synthetic_dataset(
            paths, crop_size=config["crop_size"], batch_size=config["batch_size"], seed=seed,
            raindrop_options=options or None,
            lens_fraction=lens_fraction, return_mask=wants_mask(config), lens_options=lens_options or None,
            reference_side=reference_side, lens_reference_side=lens_reference_side, sky_fraction=sky_fraction,
            wide_view=wide_view,
        )
    started = time.perf_counter()
    gan.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    return gan.generator, time.perf_counter() - started, config


def score(model_path, real_set):
    from keras_derain.data import find_pairs
    from keras_derain.evaluate import evaluate

    result = evaluate(model_path, find_pairs(SHARED / real_set))
    return {side: {key: result["means"][side][key] for key in ("psnr_y", "ssim_y")} for side in ("input", "model")}


def commit():
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "keras_derain"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


HEADER = """# Sim-to-real: what the renderer teaches a model

`benchmarks/sim2real.py`: Pix2Pix + the study's penalties (32 channels, 128x128 crops, batch 8,
2,000 steps, one seed), trained on synthetic drops rendered on `../shared/data/clean` (106 photos,
nested) and scored with the official Y protocol on the real pairs: `raindrop_real` (2 Raindrop
pairs, 720x480) and `raindrop_real_lens` (100 RobotCar lens pairs, 256x256). Never trained on them.
Each cell is the generator's mean PSNR-Y / SSIM-Y, with its change against the rainy input.

| label | seed | commit | raindrop_real PSNR-Y / SSIM-Y | change | lens PSNR-Y / SSIM-Y | change | train s | options |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""


def append_row(path, row):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(HEADER)
    cells = [row["label"], str(row["seed"]), row["commit"]]
    for real_set in SETS:
        model, base = row[real_set]["model"], row[real_set]["input"]
        cells.append(f"{model['psnr_y']:.2f} / {model['ssim_y']:.4f}")
        cells.append(f"{model['psnr_y'] - base['psnr_y']:+.2f} dB / {model['ssim_y'] - base['ssim_y']:+.4f}")
    arch = {"arch": row["arch"]} if row.get("arch", "pix2pix") != "pix2pix" else {}
    cells += [f"{row['train_seconds']:.0f}", f"`{json.dumps({**arch, **row['options'], **row.get('config', {})})}`"]
    # The row goes at the end of the first table, before any notes below it.
    lines = path.read_text().splitlines(keepends=True)
    table = [index for index, line in enumerate(lines) if line.startswith("|")]
    end = table[0]
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, "| " + " | ".join(cells) + " |\n")
    path.write_text("".join(lines))
    with path.with_suffix(".jsonl").open("a") as file:
        file.write(json.dumps(row) + "\n")


def main(argv=None):
    args = parse_args(argv)
    trained_at = commit()  # the code that trains, not what HEAD has become by the time it is scored
    options = json.loads(args.options)
    lens_options = json.loads(args.lens_options)
    paths = clean_photos(args.clean)
    if args.renderer_commit and (options or lens_options or args.lens_fraction != 0 or args.sky_fraction):
        print("error: --renderer-commit draws the old renderer's defaults alone: give --lens-fraction 0 and no "
              "--options, --lens-options or --sky-fraction", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: --clean {args.clean}: no photos", file=sys.stderr)
        return 2
    if args.model:
        import keras

        generator, seconds = keras.saving.load_model(args.model), args.train_seconds
    else:
        config = train_config(args.arch, args.seed, json.loads(args.config))
        generator, seconds, _ = train_generator(paths, options, args.seed, args.steps, args.lens_fraction, config,
                                                lens_options, args.reference_side, args.lens_reference_side,
                                                args.sky_fraction, args.renderer_commit,
                                                not args.crop_view)
    row = {"label": args.label, "seed": args.seed, "steps": args.steps, "commit": trained_at,
           "arch": args.arch, "config": json.loads(args.config),
           "options": {**options, **({"lens_fraction": args.lens_fraction} if args.lens_fraction is not None else {}),
                       **({"lens_options": lens_options} if lens_options else {}),
                       **({"reference_side": args.reference_side} if args.reference_side != 480 else {}),
                       **({"lens_reference_side": args.lens_reference_side}
                          if args.lens_reference_side is not None else {}),
                       **({"sky_fraction": args.sky_fraction} if args.sky_fraction else {}),
                       **({"renderer_commit": args.renderer_commit} if args.renderer_commit else {}),
                       **({"wide_view": False} if args.crop_view else {})},
           "train_seconds": seconds, "photos": len(paths), "machine": describe(),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as scratch:
        model_path = Path(args.keep) if args.keep else Path(scratch) / "generator.keras"
        if not args.model:
            model_path.parent.mkdir(parents=True, exist_ok=True)
            generator.save(model_path)
        else:
            model_path = args.model
        for real_set in SETS:
            row[real_set] = score(model_path, real_set)
    append_row(args.out, row)
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
