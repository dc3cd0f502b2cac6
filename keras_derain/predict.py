"""Derain photos from the command line: ``keras-derain INPUT... --model PATH --out DIR``.

Thin: parses flags, lists the images (files, or the images in folders) and
calls `keras_derain.inference.Derainer`. Each result is written to
``DIR/NAME_derained.png`` (lossless, and never the input's own name, so
``--out`` may be the input folder). An unreadable image is reported in one
line and skipped; the exit status is 1 if any image failed.

Example:
    keras-derain photos/ extra.jpg --model exported/generator.onnx --out derained/
    python -m keras_derain.predict photos/ --out derained/
"""

import argparse
import os
import sys
from pathlib import Path

from keras_derain.inference import DEFAULT_TILE_SIZE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

SUFFIX = "_derained.png"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-derain",
        description="Remove raindrops from photos with a trained generator (any size; large photos run in tiles).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--model", type=Path,
                        help="a .keras generator, a SavedModel folder or an .onnx file (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("derained"), help="output folder (default: derained)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help=f"tile side for large photos (default: {DEFAULT_TILE_SIZE})")
    parser.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default: 32)")
    return parser.parse_args(argv)


def collect_inputs(inputs):
    """Image paths from files and folders, plus ``(path, message)`` for inputs that are neither."""
    from keras_derain.data.images import DatasetError, list_images

    paths, failures = [], []
    for item in inputs:
        if item.is_dir():
            try:
                paths.extend(list_images(item))
            except DatasetError as error:
                failures.append((item, str(error)))
        elif item.exists():
            paths.append(item)
        else:
            failures.append((item, f"{item}: no such file or folder"))
    return paths, failures


def output_path(path, out_dir):
    """``out_dir/NAME_derained.png`` for the input ``path``."""
    return Path(out_dir) / f"{Path(path).stem}{SUFFIX}"


def derain_files(derainer, paths, out_dir, progress=True):
    """Derain each file into ``out_dir``; return ``[(path, message)]`` of the ones that failed."""
    import keras
    from PIL import Image

    from keras_derain.atomic import atomic_output
    from keras_derain.data.images import DatasetError
    from keras_derain.inference import InferenceError

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    failures, written = [], {}
    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    for index, path in enumerate(paths, start=1):
        destination = output_path(path, out_dir)
        if destination in written:
            failures.append((path, f"{path}: same output name as {written[destination]}; skipped"))
        else:
            try:
                derained = derainer.derain(path)
                with atomic_output(destination) as temporary:
                    Image.fromarray(derained).save(temporary, format="PNG")
                written[destination] = path
            except (DatasetError, InferenceError, OSError) as error:
                failures.append((path, str(error)))
        if bar is not None:
            bar.update(index)
    return failures


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    from keras_derain.inference import Derainer, InferenceError

    paths, failures = collect_inputs(args.inputs)
    if not paths:
        for _, message in failures:
            print(f"error: {message}", file=sys.stderr)
        return fail("no images to derain")
    try:
        derainer = Derainer(args.model, tile_size=args.tile_size, overlap=args.overlap)
    except InferenceError as error:
        return fail(str(error))
    print(f"model: {derainer.path}; {len(paths)} image(s) -> {args.out}")
    try:
        file_failures = derain_files(derainer, paths, args.out)
    except OSError as error:
        return fail(f"--out {args.out}: cannot write there ({error.strerror or error})")
    failures += file_failures
    for _, message in failures:
        print(f"failed: {message}", file=sys.stderr)
    summary = f"derained {len(paths) - len(file_failures)} of {len(paths)} image(s) into {args.out}"
    print(summary + (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
