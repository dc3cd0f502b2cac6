"""Export a generator: ``python export.py --format all [--model default|PATH] [--out DIR]``.

Thin: parses flags and calls keras_derain.export.export_generator, which writes
a SavedModel (signatures ``derain``: uint8 in and out, ``derain_float``: float32
in [-1, 1]), an ONNX file (float32 in [-1, 1], height and width padded to the
multiple in its metadata by the caller), an int8 ONNX file (``--format
onnx-int8``, opt-in) and a ``.keras`` copy, and replaces nothing unless every
export passes its check (within 1e-4 of the Keras generator; the ONNX file also
in OpenCV's DNN module when installed). --model takes a built-in generator's name
(``default``, the shipped one), a .keras or a compact .npz file; without it,
best.keras of the newest run in runs/.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Export a generator as SavedModel, ONNX and .keras, verified against the Keras model."
    )
    parser.add_argument("--format", default="all",
                        help="savedmodel, onnx, onnx-int8, keras or all (savedmodel, onnx and keras; the default)")
    parser.add_argument("--model", help="a built-in generator (default: the shipped one), a .keras or a compact .npz "
                                        "generator (default: best.keras of the newest run)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where to look without --model")
    parser.add_argument("--out", type=Path, help="output folder (default: export/ beside the model)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    return parser.parse_args(argv)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    from keras_derain.export import ExportError, check_formats, export_generator, newest_run_model, resolve_model

    try:
        formats = check_formats(args.format)
        if args.model is None:
            model = newest_run_model(args.runs_dir)
            print(f"model: {model} (the newest run's best generator)")
        else:
            model = resolve_model(args.model)
        # A built-in generator's exports go to ./export, not into the installed package.
        builtin = args.model is not None and Path(args.model) != model
        out_dir = args.out or (Path("export") if builtin else model.parent / "export")
        report = export_generator(model, out_dir, formats, opset=args.opset)
    except ExportError as error:
        return fail(str(error))
    for format_name, result in report.items():
        check = (f"PSNR {result['psnr']:.1f} dB against Keras" if format_name == "onnx-int8"
                 else f"max |difference| {result['max_abs_diff']:.1e}")
        if result.get("opencv_max_abs_diff") is not None:
            check += f", OpenCV DNN {result['opencv_max_abs_diff']:.1e}"
        if "ops" in result:
            check += f"; {sum(result['ops'].values())} nodes"
        print(f"{format_name}: {result['path']} ({check})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
