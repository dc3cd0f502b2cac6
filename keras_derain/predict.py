"""Derain photos from the command line: ``keras-derain INPUT... --model PATH --out DIR``.

Thin: parses flags, lists the photos (files, and the images in folders) and
calls `keras_derain.inference.Derainer`. Each result is written to
``DIR/NAME_derained.png`` (lossless, never the input's own name); with
``--recursive``, ``DIR/SUB/FOLDER/NAME_derained.png`` mirrors the input folder.

A batch is checked before any photo is derained: ``--out`` must be writable,
two photos may not share an output name, and outputs already in ``--out``
are refused unless ``--overwrite`` (replace them) or ``--skip-existing``
(keep them; resumes a batch) is given. Then one photo that fails (unreadable,
over ``--max-pixels``, out of memory, disk full, ...) is reported in one line
naming it, and the others go on; a summary is always printed. Exit status: 0,
1 if any photo failed, 2 if nothing could start, 130 on Ctrl-C. Outputs are
written whole or not at all (`keras_derain.atomic`).

In folders, hidden and non-image files, subfolders (without ``--recursive``),
files named ``*_derained.png`` (this command's outputs) and links to folders
already read are skipped; the summary counts them and ``--verbose`` lists them.

Example:
    keras-derain photos/ extra.jpg --model exported/generator.onnx --out derained/
    python -m keras_derain.predict photos/ --recursive --skip-existing --out derained/
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from keras_derain.inference import DEFAULT_MAX_PIXELS, DEFAULT_TILE_SIZE

SUFFIX = "_derained.png"
MASK_SUFFIX = "_mask.png"


def pixel_count(text):
    """argparse type for --max-pixels: an integer, also written like 2e8."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value.is_integer() or value < 4:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels (at least 4), got {text!r}")
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-derain",
        description="Remove raindrops from photos with a trained generator (any size; large photos run in tiles).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--model", type=Path,
                        help="a .keras generator, a SavedModel folder, an .onnx file, or a built-in name: default "
                        "(drops on windows; the default) or lens (drops on a camera lens)")
    parser.add_argument("--out", type=Path, default=Path("derained"), help="output folder (default: derained)")
    parser.add_argument("--recursive", "-r", action="store_true",
                        help="also read subfolders; outputs mirror them under --out")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave photos whose output is already in --out (resumes a batch); "
                               "by default a batch with outputs already there is refused before any work")
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger photos, from their header (default: {DEFAULT_MAX_PIXELS:,}); "
                             "peak memory grows about 8 bytes a pixel")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help=f"tile side for large photos (default: {DEFAULT_TILE_SIZE})")
    parser.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default: 32)")
    parser.add_argument("--verbose", "-v", action="store_true", help="list the entries skipped in folders")
    parser.add_argument("--save-mask", action="store_true",
                        help=f"also write the predicted drop mask, NAME{MASK_SUFFIX} (white: drop), for a generator "
                        "with a mask head (the restoration generator; .keras or .npz); it runs the mask head "
                        "a second time")
    return parser.parse_args(argv)


@dataclasses.dataclass
class Batch:
    """What `collect_inputs` found: ``photos`` as ``(path, output)``, and ``(path, message)`` lists."""

    photos: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)


def collect_inputs(inputs, out_dir, recursive=False):
    """The photos to derain, each with its output path; inputs that failed; entries skipped.

    A file given twice is skipped; two photos with one output name (``a.jpg``
    and ``a.png``) make the second a failure.
    """
    batch, owners, seen = Batch(), {}, set()
    for item in map(Path, inputs):
        if item.is_dir():
            found = [(path, output_path(path, Path(out_dir) / relative))
                     for path, relative in _walk(item, item, Path(out_dir).resolve(), recursive, batch, set())]
        elif item.is_file():
            found = [(item, output_path(item, out_dir))]
        else:
            batch.failures.append((item, f"{item}: no such file or folder"))
            continue
        for path, destination in found:
            if path.resolve() in seen:
                batch.skipped.append((path, "given twice"))
            elif destination in owners:
                batch.failures.append((path, f"{path}: same output name as {owners[destination]}; rename one"))
            else:
                seen.add(path.resolve())
                owners[destination] = path
                batch.photos.append((path, destination))
    return batch


def _walk(folder, root, out_dir, recursive, batch, visited):
    """Yield ``(image, its folder relative to root)`` under ``folder``; note what is skipped in ``batch``."""
    from keras_derain.data.images import IMAGE_SUFFIXES, natural_key

    visited.add(folder.resolve())
    try:
        entries = sorted(folder.iterdir(), key=natural_key)
    except OSError as error:
        batch.failures.append((folder, f"{folder}: cannot be read ({error.strerror or error})"))
        return
    for entry in entries:
        reason = None
        if entry.name.startswith("."):
            reason = "hidden"
        elif entry.is_dir():
            if not recursive:
                reason = "a folder; --recursive reads it"
            elif entry.resolve() == out_dir:
                reason = "the output folder"
            elif entry.resolve() in visited:
                reason = "a folder already read (a link)"
            else:
                yield from _walk(entry, root, out_dir, recursive, batch, visited)
                continue
        elif not entry.is_file():
            reason = "not a file or folder (a broken link?)"
        elif entry.suffix.lower() not in IMAGE_SUFFIXES:
            reason = f"not an image ({', '.join(IMAGE_SUFFIXES)})"
        elif entry.name.endswith((SUFFIX, MASK_SUFFIX)):
            reason = f"an output of this command (*{SUFFIX} or *{MASK_SUFFIX})"
        if reason:
            batch.skipped.append((entry, reason))
        else:
            yield entry, entry.parent.relative_to(root)


def output_path(path, out_dir):
    """``out_dir/NAME_derained.png`` for the input ``path``."""
    return Path(out_dir) / f"{Path(path).stem}{SUFFIX}"


def mask_path(destination):
    """``NAME_mask.png`` beside the derained output ``NAME_derained.png``."""
    destination = Path(destination)
    return destination.with_name(destination.name[: -len(SUFFIX)] + MASK_SUFFIX)


def derain_file(derainer, path, destination, masker=None):
    """Derain ``path`` into ``destination`` (and its mask, with ``masker``); None, or a one-line message naming ``path``."""
    from PIL import Image

    from keras_derain.atomic import atomic_output
    from keras_derain.inference import one_line

    try:
        derained = derainer.derain(path)
        mask = masker.derain(path)[..., 0] if masker is not None else None
    except Exception as error:  # whatever goes wrong (MemoryError, TensorFlow's, PIL's) is this photo's alone
        message = one_line(error)
        if isinstance(error, MemoryError):
            message += "; out of memory: a lower --max-pixels refuses such photos up front"
        return message if message.startswith(str(path)) else f"{path}: {message}"
    outputs = [(destination, derained)] + ([(mask_path(destination), mask)] if mask is not None else [])
    for target, image in outputs:
        try:
            with atomic_output(target) as temporary:
                Image.fromarray(image).save(temporary, format="PNG")
        except Exception as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)
            return f"{path}: cannot write {target} ({reason})"
    return None


def derain_files(derainer, photos, progress=False, masker=None):
    """Derain each ``(path, destination)`` in turn; yield ``(path, message)``, message None if it worked."""
    import keras

    bar = keras.utils.Progbar(len(photos), unit_name="photo") if progress else None
    for index, (path, destination) in enumerate(photos, start=1):
        yield path, derain_file(derainer, path, destination, masker)
        if bar is not None:
            bar.update(index)


def summary(derained, total, failed, kept, skipped, out_dir, verbose=False):
    """The last line of every run: what was derained, failed, kept and skipped."""
    text = f"derained {derained} of {total} photo(s) into {out_dir}"
    if failed:
        text += f"; {failed} failed"
    if kept:
        text += f"; {kept} kept (output already there)"
    if skipped:
        text += f"; {skipped} other entr{'y' if skipped == 1 else 'ies'} skipped"
        text += "" if verbose else " (--verbose lists them)"
    return text


def out_error(out_dir, error):
    """The one line for an output folder that `keras_derain.atomic.check_writable` refused."""
    reason = error.strerror or str(error)
    if error.filename and Path(error.filename) != Path(out_dir):
        reason += f": {error.filename}"
    return f"--out {out_dir}: cannot write there ({reason})"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    finished = []  # (path, message) per photo done, for the Ctrl-C line
    try:
        return run(args, finished)
    except KeyboardInterrupt:
        written = sum(message is None for _, message in finished)
        bar_line = "\n" if sys.stdout.isatty() else ""  # end the progress bar's line first
        print(f"{bar_line}interrupted: {written} photo(s) derained into {args.out}; none half-written", file=sys.stderr)
        return 130


def run(args, finished):
    """The command after parsing: checks, then each photo; appends ``(path, message)`` to ``finished``."""
    from keras_derain.atomic import check_writable, remove_stale_temporaries
    from keras_derain.inference import Derainer, InferenceError

    batch = collect_inputs(args.inputs, args.out, args.recursive)
    skipped_lines = [f"skipped: {path}: {reason}" for path, reason in batch.skipped]
    if not batch.photos:
        print("\n".join(skipped_lines + [f"failed: {message}" for _, message in batch.failures]), file=sys.stderr)
        return fail("no images to derain")
    outputs = [destination for _, destination in batch.photos]
    outputs += [mask_path(destination) for destination in outputs] if args.save_mask else []
    existing = [output for output in outputs if output.exists()]
    if existing and not (args.overwrite or args.skip_existing):
        return fail(f"--out {args.out}: {len(existing)} output(s) already there (e.g. {existing[0]}); "
                    "pass --overwrite to replace them or --skip-existing to keep them")
    try:
        check_writable(args.out)
    except OSError as error:
        return fail(out_error(args.out, error))
    for folder in {destination.parent for _, destination in batch.photos}:
        remove_stale_temporaries(folder)  # left by a run killed mid-write
    def done(destination):
        return destination.exists() and (not args.save_mask or mask_path(destination).exists())

    todo = [photo for photo in batch.photos if not (args.skip_existing and done(photo[1]))]
    try:
        derainer = Derainer(args.model, tile_size=args.tile_size, overlap=args.overlap, max_pixels=args.max_pixels)
        masker = None
        if args.save_mask:
            masker = Derainer(derainer.path, tile_size=args.tile_size, overlap=args.overlap,
                              max_pixels=args.max_pixels, output="mask")
    except InferenceError as error:
        return fail(f"--save-mask: {error}" if args.save_mask and "mask" in str(error) else str(error))
    print(f"model: {derainer.path}; {len(todo)} photo(s) -> {args.out}")
    for path, message in derain_files(derainer, todo, progress=sys.stdout.isatty(), masker=masker):
        finished.append((path, message))
    failures = batch.failures + [(path, message) for path, message in finished if message]
    for _, message in failures:
        print(f"failed: {message}", file=sys.stderr)
    if args.verbose and skipped_lines:
        print("\n".join(skipped_lines))
    derained = len(finished) - (len(failures) - len(batch.failures))
    print(summary(derained, len(batch.photos) + len(batch.failures), len(failures), len(batch.photos) - len(todo),
                  len(batch.skipped), args.out, args.verbose))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
