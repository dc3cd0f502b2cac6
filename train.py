"""Train a raindrop-removal GAN: ``python train.py --arch pix2pix``.

Thin: parses flags, resolves the preset (keras_derain.presets) and calls
keras_derain.training.train. Run ``python train.py --help`` for the flags.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a cGAN or Pix2Pix raindrop remover. Without --data or --clean-dir it renders "
        "synthetic raindrops on the built-in photos, sized to finish in about 10 minutes on a 2-core CPU."
    )
    parser.add_argument("--arch", help="pix2pix (U-Net + PatchGAN; the default) or cgan (the study's), or "
                        "restoration (mask-guided residual generator + PatchGAN); with --init, the file's")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from this generator instead of random weights (fine-tuning): default (the "
                        "shipped one), a built-in name, or a .keras / .npz file; its architecture is used, and "
                        "flags must agree with it. The discriminator starts fresh unless the file is a whole "
                        "DerainGAN")
    parser.add_argument("--penalties", action="store_true",
                        help="the study's discriminator penalties: soft labels 0.9/0.1, G lr 5e-4, D lr 2e-4")
    data = parser.add_argument_group("data (default: synthetic drops on the built-in photos)")
    data.add_argument("--data", type=Path, help="pairs in the Raindrop layout (data/ + gt/, or train/ test_a/ ...)")
    data.add_argument("--val", type=Path, help="validation pairs (default: DATA/test_a if present); with real "
                      "pairs the best generator is chosen by PSNR-Y on the whole photos")
    data.add_argument("--clean-dir", type=Path, help="clean photos to render synthetic raindrops on; with --data, "
                      "mixed with the real pairs")
    data.add_argument("--real-fraction", type=float, help="with --data: share of real pairs in every batch, the "
                      "rest synthetic drops on --clean-dir or the built-in photos (default: 0.5 with --clean-dir, "
                      "else 1: real pairs only)")
    data.add_argument("--color-match", action="store_true", help="match each real clean image's global colour to "
                      "its rainy partner outside the drops (per-channel gain and offset) before the loss: for "
                      "pairs shot by two cameras or at two exposures")
    data.add_argument("--lens-fraction", type=float, help="share of synthetic batches rendered in the lens style "
                      "(default: synthetic_dataset's, 0.25)")
    data.add_argument("--drops", metavar="JSON", help="window-style RaindropOptions overrides for the rendered drops, "
                      "as JSON, e.g. '{\"density\": 0.5, \"dry_fraction\": 0.2}' (the lens style is unchanged)")
    data.add_argument("--lens-drops", metavar="JSON", help="overrides of the lens style for the lens batches, as JSON, "
                      "e.g. '{\"blur_range\": [0.0, 0.03]}'")
    data.add_argument("--reference-side", type=int, metavar="PX",
                      help="the short side (px) that the rendered drops' sizes are fractions of, in the training "
                      "batches (default 480: drops as large as on a 720x480 Raindrop frame); a larger side draws "
                      "larger, blurrier drops")
    data.add_argument("--lens-reference-side", type=int, metavar="PX",
                      help="the same for the lens batches alone (default: --reference-side); drops on a lens sit "
                      "closer to the camera than drops on a window")
    data.add_argument("--sky-fraction", type=float, metavar="F",
                      help="share of the rendered crops whose top is painted over with a procedural cloudy sky, "
                      "so the model learns that clouds are not drops (default 0)")
    data.add_argument("--storm-share", type=float, metavar="F",
                      help="share of those skies that are storms: grey clouds against a sky burnt out to white "
                      "(default 0.3)")
    data.add_argument("--lens-storm-share", type=float, metavar="F",
                      help="the same for the lens batches' skies (default: --storm-share)")
    preset = parser.add_argument_group("overrides of the preset (unset: the preset's value)")
    for flag, kind, text in [
        ("--epochs", int, "epochs"), ("--batch-size", int, "pairs per step"),
        ("--g-lr", float, "generator learning rate"), ("--d-lr", float, "discriminator learning rate"),
        ("--beta-1", float, "Adam beta_1"),
        ("--real-label", float, "discriminator target for real pairs"),
        ("--fake-label", float, "discriminator target for generated pairs"),
        ("--label-flip", float, "probability of swapping the two targets, per image"),
        ("--g-steps", int, "generator updates per discriminator update"),
        ("--l1-weight", float, "weight of L1 in the generator loss"),
        ("--crop-size", int, "side of the square training crops"),
        ("--base-channels", int, "channels of the first layer"),
        ("--steps-per-epoch", int, "steps per epoch (default: one pass over the data)"),
        ("--seed", int, "random seed"),
        ("--adversarial-weight", float, "weight of the adversarial term"),
        ("--charbonnier-weight", float, "weight of the Charbonnier (smooth L1) term"),
        ("--ssim-weight", float, "weight of 1 - SSIM"),
        ("--fft-weight", float, "weight of the L1 distance of the Fourier transforms"),
        ("--mask-weight", float, "weight of the drop-mask BCE (generators with a mask head)"),
        ("--nce-weight", float, "weight of PatchNCE, the contrastive loss on the discriminator's features"),
        ("--ungated-weight", float, "weight of the Charbonnier term on rainy + correction, the restoration "
         "generator's correction applied without its mask (so a soft or false mask does little harm)"),
        ("--ema-momentum", float, "keep an exponential moving average of the generator's weights with this "
         "momentum (e.g. 0.999) and validate and save it; 0: off"),
    ]:
        preset.add_argument(flag, type=kind, help=text)
    preset.add_argument("--affine", action="store_const", const=True,
                        help="restoration: also predict a per-pixel gain, correction = gain * rainy + offset")
    preset.add_argument("--global-head", action="store_const", const=True,
                        help="restoration: also add a per-photo gain and offset read from the whole photo (a lens's "
                        "veiling glare); with --init of a generator without one, it is added at zero")
    preset.add_argument("--train-only", metavar="PREFIX",
                        help="train only the generator's layers whose names start with PREFIX (e.g. global_ to fit "
                        "a new global head on a trained generator); the discriminator trains as usual")
    run = parser.add_argument_group("run")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs)")
    run.add_argument("--name", help="run folder name (default: ARCH-DATE-TIME)")
    run.add_argument("--patience", type=int, help="stop after this many epochs without a better validation score")
    run.add_argument("--keep-epochs", action="store_true",
                     help="keep every epoch's generator as RUN/epochs/epNNN.keras (for averaging the last few "
                     "with benchmarks/average_checkpoints.py)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run --name (default: the newest run) from its last completed epoch; "
                     "--epochs is the one other flag it takes, to extend the run")
    run.add_argument("--strategy", default="default", help="default, mirrored (all local GPUs) or "
                     "multiworker (cluster from TF_CONFIG); --batch-size is the global batch")
    run.add_argument("--mixed-precision", default="auto", metavar="{auto,on,off}",
                     help="mixed_float16 with loss scaling (auto: on with a GPU, off on a CPU)")
    run.add_argument("--jit", default="auto", metavar="{auto,on,off}",
                     help="XLA compilation of the train step (auto: on with a GPU, off on a CPU)")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    return parser.parse_args(argv)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    from keras_derain.presets import PRESETS, resolve

    if args.arch is not None and args.arch not in PRESETS:
        return fail(f"--arch {args.arch!r} is unknown; choose one of: {', '.join(PRESETS)}")
    if args.val is not None and args.data is None:
        return fail("--val needs --data")
    for flag, value in (("--real-fraction", args.real_fraction), ("--color-match", args.color_match or None)):
        if value is not None and args.data is None:
            return fail(f"{flag} needs --data (real pairs)")
    if args.real_fraction is not None and not 0.0 < args.real_fraction <= 1.0:
        return fail(f"--real-fraction must be in (0, 1], got {args.real_fraction}")
    if args.reference_side is not None and args.reference_side < 32:
        return fail(f"--reference-side must be at least 32 pixels, got {args.reference_side}")
    if args.lens_reference_side is not None and args.lens_reference_side < 32:
        return fail(f"--lens-reference-side must be at least 32 pixels, got {args.lens_reference_side}")
    if args.sky_fraction is not None and not 0.0 <= args.sky_fraction <= 1.0:
        return fail(f"--sky-fraction must be in [0, 1], got {args.sky_fraction}")
    for flag, value in (("--storm-share", args.storm_share), ("--lens-storm-share", args.lens_storm_share)):
        if value is not None and not 0.0 <= value <= 1.0:
            return fail(f"{flag} must be in [0, 1], got {value}")
        if value is not None and not args.sky_fraction:
            return fail(f"{flag} is a share of the painted skies: it needs --sky-fraction above 0")
    if args.sky_fraction is not None and args.data is not None and args.clean_dir is None:
        return fail("--sky-fraction paints the photos that drops are rendered on: it needs synthetic data "
                    "(--clean-dir, or no --data)")
    for flag, value in (("--reference-side", args.reference_side), ("--lens-reference-side", args.lens_reference_side)):
        if value is not None and args.data is not None and args.clean_dir is None:
            return fail(f"{flag} sizes rendered drops: it needs synthetic data (--clean-dir, or no --data)")
    if args.lens_fraction is not None and not 0.0 <= args.lens_fraction <= 1.0:
        return fail(f"--lens-fraction must be in [0, 1], got {args.lens_fraction}")
    parsed = {}  # style -> its overrides
    for flag, text, style in (("--drops", args.drops, None), ("--lens-drops", args.lens_drops, "lens")):
        if text is None:
            continue
        try:
            parsed[style] = json.loads(text)
            if not isinstance(parsed[style], dict):
                raise ValueError("not a JSON object")
            from keras_derain.data.raindrops import raindrop_options

            raindrop_options(style, **parsed[style])
        except (ValueError, TypeError) as error:
            return fail(f"{flag}: {error}")
    drops, lens_drops = parsed.get(None), parsed.get("lens")
    if args.patience is not None and args.patience <= 0:
        return fail(f"--patience must be a positive integer, got {args.patience}")
    if args.strategy == "multiworker" and not args.name:
        return fail("--strategy multiworker needs --name, so that every worker uses the same run folder")

    from keras_derain.data import DatasetError, find_pairs
    from keras_derain.training import (TrainingError, check_config, extend_run, init_config, newest_run,
                                       read_config, train)

    run_dir = None
    try:
        if args.resume:
            run_dir = args.runs_dir / args.name if args.name else newest_run(args.runs_dir)
            if args.epochs is not None:
                record = extend_run(run_dir, args.epochs)
            else:
                record = read_config(run_dir)
            config = record["config"]
            data = record["data"]
            real = data["kind"] in ("pairs", "mixed")
            args.data = Path(data["train"]) if real else None
            args.val = Path(data["val"]) if real else None
            args.clean_dir = Path(data["clean"]) if data.get("clean") not in (None, "built-in") else None
            args.real_fraction = data.get("real_fraction")
            args.color_match = data.get("colour_match", False)
            args.lens_fraction = data.get("lens_fraction")
            drops = data.get("drop_options")
            lens_drops = data.get("lens_drop_options")
            args.reference_side = data.get("reference_side")
            args.lens_reference_side = data.get("lens_reference_side")
            args.sky_fraction = data.get("sky_fraction")
            args.storm_share = data.get("storm_share")
            args.lens_storm_share = data.get("lens_storm_share")
            start = record.get("start") or {}
            args.init = (start.get("init") or {}).get("model")
            args.patience = start.get("patience")
            args.keep_epochs = start.get("keep_epochs", False)
            # The same strategy and precision as before: a different optimizer type
            # (LossScaleOptimizer or not) could not take the saved optimizer state.
            runtime = record.get("runtime", {})
            args.strategy = runtime.get("strategy", args.strategy)
            if "mixed_precision" in runtime:
                args.mixed_precision = "on" if runtime["mixed_precision"] else "off"
            print(f"resuming {run_dir} (its config.json, {config['epochs']} epochs; other flags are ignored)")
        else:
            # Every preset option that has a flag (all but arch and latent_dim).
            overrides = {
                name: getattr(args, name) for name in PRESETS["pix2pix"] if name != "arch" and hasattr(args, name)
            }
            builtin = args.data is None and args.clean_dir is None
            if args.init is not None:
                config = init_config(args.init, args.arch, penalties=args.penalties, builtin_data=builtin,
                                     **overrides)
            else:
                config = resolve(args.arch or "pix2pix", penalties=args.penalties, builtin_data=builtin, **overrides)
            check_config(config)
            if args.data is not None:
                find_pairs(args.data, "train" if (args.data / "train").is_dir() else None)
            name = args.name or f"{config['arch']}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = args.runs_dir / name
        print(f"run folder: {run_dir}")
        summary = train(config, run_dir, data=args.data, val=args.val, clean_dir=args.clean_dir,
                        resume=args.resume, verbose=2 if args.quiet else "auto", strategy=args.strategy,
                        mixed_precision=args.mixed_precision, jit=args.jit, init=args.init,
                        real_fraction=args.real_fraction, colour_match=args.color_match,
                        lens_fraction=args.lens_fraction, drop_options=drops, patience=args.patience,
                        lens_drop_options=lens_drops, keep_epochs=args.keep_epochs,
                        reference_side=args.reference_side, lens_reference_side=args.lens_reference_side,
                        sky_fraction=args.sky_fraction, storm_share=args.storm_share,
                        lens_storm_share=args.lens_storm_share)
    except (ValueError, DatasetError, TrainingError) as error:
        return fail(str(error))
    except KeyboardInterrupt:
        if run_dir is None:
            print("\ninterrupted", file=sys.stderr)
            return 130
        again = f"python train.py --resume --name {run_dir.name}"
        if run_dir.parent != Path("runs"):
            again += f" --runs-dir {run_dir.parent}"
        print(f"\ninterrupted; continue with: {again}", file=sys.stderr)
        return 130

    print(
        f"validation PSNR ({summary['val_pairs']} pairs, RGB): rainy input {summary['rainy_psnr']:.2f} dB -> "
        f"derained {summary['derained_psnr']:.2f} dB ({summary['gain_db']:+.2f} dB)"
    )
    if "derained_psnr_y" in summary:
        print(
            f"real pairs, whole photos (PSNR-Y / SSIM-Y): rainy input {summary['rainy_psnr_y']:.2f} dB / "
            f"{summary['rainy_ssim_y']:.4f} -> derained {summary['derained_psnr_y']:.2f} dB / "
            f"{summary['derained_ssim_y']:.4f} ({summary['derained_psnr_y'] - summary['rainy_psnr_y']:+.2f} dB)"
        )
    if summary.get("stopped_early"):
        print(f"stopped early: no better score for {args.patience} epochs after epoch {summary['best_epoch']}")
    epoch = f" (epoch {summary['best_epoch']})" if "best_epoch" in summary else ""
    print(f"best generator: {run_dir / 'best.keras'}{epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
