"""Export a trained generator: ``python export.py --format all [--model PATH] [--out DIR]``.

Thin: parses flags and calls keras_derain.export.export_generator, which writes
a SavedModel (signatures ``derain``: uint8 in and out, ``derain_float``: float32
in [-1, 1]), an ONNX file (float32 in [-1, 1]) and a ``.keras`` copy, all taking
any height and width, and replaces nothing unless every export matches the
Keras generator within 1e-4. Without --model it exports best.keras of the newest
run in runs/.
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
    parser.add_argument("--format", default="all", help="savedmodel, onnx, keras or all (default: all)")
    parser.add_argument("--model", type=Path, help="a .keras generator (default: best.keras of the newest run)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where to look without --model")
    parser.add_argument("--out", type=Path, help="output folder (default: export/ beside the model)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    return parser.parse_args(argv)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    from keras_derain.export import ExportError, check_formats, export_generator, newest_run_model

    try:
        formats = check_formats(args.format)
        model = args.model
        if model is None:
            model = newest_run_model(args.runs_dir)
            print(f"model: {model} (the newest run's best generator)")
        out_dir = args.out or model.parent / "export"
        report = export_generator(model, out_dir, formats, opset=args.opset)
    except ExportError as error:
        return fail(str(error))
    for format_name, result in report.items():
        print(f"{format_name}: {result['path']} (max |difference| {result['max_abs_diff']:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
