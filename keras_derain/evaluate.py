"""Score generators on paired photos: PSNR and SSIM of the derained output and of the rainy input.

Each rainy photo goes through `keras_derain.inference.Derainer`, the path users
get (any size; large photos in tiles). PSNR and SSIM are measured against the
clean photo on Y, the Raindrop papers' convention (OpenCV's full-range YCrCb Y
rounded to uint8, then scikit-image's defaults; see `keras_derain.metrics`),
and on RGB. The rainy input's own scores are the baseline every paper prints.
Means are over images (the per-image values averaged, as the official script does).

Outputs in ``--out`` (default ``eval/<model>-<data>/``): ``NAME_derained.png``
(lossless, so the numbers can be recomputed from them), ``metrics.csv`` (per
image, then the means), ``summary.md`` (the table, the convention, the model,
the data and the tiling) and ``grid.jpg`` (rainy | derained | clean for the
worst and best images by PSNR-Y gain). Several ``--model`` flags write one
combined table in ``--out`` and each model's outputs in ``--out/NAME/``.
``--no-reference`` derains a folder of rainy photos without ground truth and
writes only the outputs and a rainy | derained grid (the `keras_derain.predict`
batch: a photo that fails is named in one line and the others go on).

Before anything is derained or written, every pair is checked: the photos'
headers against ``--max-pixels``, a full decode, one size per pair, and at
least 7x7 pixels (SSIM's window); ``--out`` must be writable. A failure while
deraining ends the evaluation in one line naming the photo: means over some
of the pairs would not compare with other runs. Outputs in ``--out`` are
replaced on a rerun.

Example:
    python -m keras_derain.evaluate --model runs/a/best.keras --data Raindrop --split test_a
    python -m keras_derain.evaluate --model A.keras --model B.keras --data Raindrop --split test_a \\
        --names "cGAN,Pix2Pix"
    python -m keras_derain.evaluate --model A.keras --data photos/ --no-reference
"""

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from keras_derain.inference import DEFAULT_MAX_PIXELS, DEFAULT_TILE_SIZE

MEASURES = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
HEADERS = ("PSNR-Y (dB)", "SSIM-Y", "PSNR-RGB (dB)", "SSIM-RGB")
INPUT_LABEL = "rainy input"
CONVENTION = (
    "Y: OpenCV full-range YCrCb Y (Y = 0.299 R + 0.587 G + 0.114 B, rounded to uint8), then scikit-image "
    "PSNR / SSIM defaults (data range 255, 7x7 uniform window); RGB: PSNR over all channels, SSIM per "
    "channel then averaged. No border crop. Means are over images."
)
GRID_IMAGES = 2  # the worst and the best this many, by PSNR-Y gain
GRID_WIDTH = 240  # pixels per panel in the grid, to keep it small
NO_REFERENCE_GRID_IMAGES = 8
MIN_SIDE = 7  # SSIM's 7x7 window must fit (`keras_derain.metrics`)


def quality(image, clean):
    """PSNR and SSIM of a uint8 image against the clean one, on Y and on RGB."""
    from keras_derain.metrics import psnr, ssim

    return {
        "psnr_y": float(psnr(image, clean, 255, y_channel=True)),
        "ssim_y": float(ssim(image, clean, 255, y_channel=True)),
        "psnr_rgb": float(psnr(image, clean, 255)),
        "ssim_rgb": float(ssim(image, clean, 255)),
    }


def as_derainer(model, *, tile_size=DEFAULT_TILE_SIZE, overlap=32, max_pixels=DEFAULT_MAX_PIXELS):
    """A `Derainer` as given, or one loaded from a model path (None: the shipped generator)."""
    from keras_derain.inference import Derainer

    if isinstance(model, Derainer):
        return model
    return Derainer(model, tile_size=tile_size, overlap=overlap, max_pixels=max_pixels)


def check_evaluation_pairs(pairs, max_pixels=DEFAULT_MAX_PIXELS):
    """Every photo within ``max_pixels`` (from its header), decodable, the same size as its partner, >= 7x7.

    Raises:
        InferenceError: a photo over the cap.
        DatasetError: an unreadable photo, a pair of two sizes, or photos too
            small for SSIM (all of them named).
    """
    from keras_derain.data import DatasetError, check_pairs
    from keras_derain.inference import check_pixels, photo_size, pillow_limit

    for path in (path for pair in pairs for path in pair):
        check_pixels(path, *photo_size(path), max_pixels)
    with pillow_limit(max_pixels):
        shapes = check_pairs(pairs)
    small = [f"{rainy} ({width}x{height})" for (rainy, _), (height, width) in zip(pairs, shapes)
             if min(height, width) < MIN_SIDE]
    if small:
        raise DatasetError(
            f"{len(small)} pair(s) smaller than SSIM's {MIN_SIDE}x{MIN_SIDE} window: {', '.join(small)}"
        )


def evaluate(model, pairs, *, out_dir=None, tile_size=DEFAULT_TILE_SIZE, overlap=32, progress=False):
    """Derain each rainy photo and score it, and the rainy photo itself, against the clean one.

    Args:
        model: a `Derainer`, or a model path for one (``.keras``, SavedModel, ``.onnx``).
        pairs: ``(rainy_path, clean_path)`` tuples, e.g. from `keras_derain.data.find_pairs`.
        out_dir: where to write ``NAME_derained.png`` for each photo; None writes nothing.
        tile_size, overlap: `Derainer` options, used when ``model`` is a path.
        progress: show a progress bar.

    Returns:
        dict: ``model`` (the path), ``tile_size``, ``overlap``, ``images`` (one dict
        per pair: ``image``, ``rainy``, ``clean``, ``derained`` (path or None),
        ``input_<measure>``, ``model_<measure>`` for each of `MEASURES`, and
        ``psnr_y_gain``) and ``means`` (``{"input": {measure: mean}, "model": {...}}``).

    Raises:
        DatasetError: no pairs, an unreadable photo, a pair of two sizes, or a
            photo under 7x7 (all before anything is written).
        InferenceError: the model cannot be loaded, a photo is over its
            ``max_pixels``, or deraining a photo failed (named).

    Example:
        >>> from keras_derain.data import find_pairs
        >>> from keras_derain.evaluate import evaluate
        >>> result = evaluate("best.keras", find_pairs("Raindrop", "test_a"))  # doctest: +SKIP
        >>> sorted(result["means"]["model"])  # doctest: +SKIP
        ['psnr_rgb', 'psnr_y', 'ssim_rgb', 'ssim_y']
    """
    import keras
    from PIL import Image

    from keras_derain.atomic import atomic_output
    from keras_derain.inference import InferenceError, one_line, read_photo
    from keras_derain.predict import output_path

    derainer = as_derainer(model, tile_size=tile_size, overlap=overlap)
    pairs = [(Path(rainy), Path(clean)) for rainy, clean in pairs]
    check_evaluation_pairs(pairs, derainer.max_pixels)  # before any inference or output
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    bar = keras.utils.Progbar(len(pairs), unit_name="image") if progress else None
    images = []
    for rainy_path, clean_path in pairs:
        rainy, clean = read_photo(rainy_path, derainer.max_pixels), read_photo(clean_path, derainer.max_pixels)
        try:
            derained = derainer.derain(rainy)
        except Exception as error:  # out of memory, a runtime error: name the photo, in one line
            raise InferenceError(f"{rainy_path}: {one_line(error)}") from None
        saved = None
        if out_dir is not None:
            saved = output_path(rainy_path, out_dir)
            with atomic_output(saved) as temporary:
                Image.fromarray(derained).save(temporary, format="PNG")
        row = {"image": rainy_path.stem, "rainy": str(rainy_path), "clean": str(clean_path), "derained": saved}
        row.update({f"input_{key}": value for key, value in quality(rainy, clean).items()})
        row.update({f"model_{key}": value for key, value in quality(derained, clean).items()})
        row["psnr_y_gain"] = row["model_psnr_y"] - row["input_psnr_y"]
        images.append(row)
        if bar is not None:
            bar.add(1)
    means = {
        side: {key: float(np.mean([row[f"{side}_{key}"] for row in images])) for key in MEASURES}
        for side in ("input", "model")
    }
    return {
        "model": str(derainer.path),
        "tile_size": derainer.tile_size,
        "overlap": derainer.overlap,
        "images": images,
        "means": means,
    }


def compare(models, pairs, *, names=None, out_dir=None, tile_size=DEFAULT_TILE_SIZE, overlap=32, progress=False):
    """`evaluate` several models on the same pairs: one table, a row each after the rainy input.

    Args:
        models: `Derainer` objects or model paths.
        names: one label per model (default: the model files' names).
        out_dir: each model's outputs go to ``out_dir/NAME/``; None writes nothing.
        Others: as for `evaluate`.

    Returns:
        dict: ``names``, ``results`` (one `evaluate` dict per model, in order) and
        ``table`` (markdown).

    Example:
        >>> from keras_derain.evaluate import compare
        >>> report = compare(["a.keras", "b.keras"], pairs, names=["cGAN", "Pix2Pix"])  # doctest: +SKIP
        >>> print(report["table"])  # doctest: +SKIP
    """
    derainers = [as_derainer(model, tile_size=tile_size, overlap=overlap) for model in models]
    names = check_names(names, [derainer.path for derainer in derainers])
    results = [
        evaluate(derainer, pairs, out_dir=None if out_dir is None else Path(out_dir) / name, progress=progress)
        for name, derainer in zip(names, derainers)
    ]
    return {"names": names, "results": results, "table": comparison_table(names, results)}


def check_names(names, paths):
    """Labels for the models: ``names`` checked, or the files' names (with their folder if two clash)."""
    if names is None:
        names = [Path(path).stem for path in paths]
        if len(set(names)) < len(names):
            names = [f"{Path(path).parent.name}-{Path(path).stem}" for path in paths]
    names = [str(name).strip() for name in names]
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} name(s) for {len(paths)} model(s); give one name per --model")
    if len(set(names)) < len(names) or not all(names):
        raise ValueError(f"model names must be distinct and non-empty, got {names}; give --names")
    if any(os.sep in name for name in names):
        raise ValueError(f"model names become folder names; {os.sep!r} is not allowed in {names}")
    return names


def markdown_table(rows):
    """A markdown table of means: ``rows`` is ``[(label, {measure: value})]``."""
    lines = ["| | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
    for label, means in rows:
        cells = [f"{means[key]:.2f}" if key.startswith("psnr") else f"{means[key]:.4f}" for key in MEASURES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(names, results):
    """The rainy input's row (the same for every model) and one row per model."""
    return markdown_table([(INPUT_LABEL, results[0]["means"]["input"])] + [
        (name, result["means"]["model"]) for name, result in zip(names, results)
    ])


def image_lines(result):
    """One line per image: its scores before and after deraining."""
    return [
        f"{row['image']}: PSNR-Y {row['input_psnr_y']:.2f} -> {row['model_psnr_y']:.2f} dB "
        f"({row['psnr_y_gain']:+.2f}), SSIM-Y {row['input_ssim_y']:.4f} -> {row['model_ssim_y']:.4f}"
        for row in result["images"]
    ]


def write_metrics_csv(result, path):
    """Per-image scores, then a ``mean`` row."""
    from keras_derain.atomic import atomic_output

    measures = [f"{side}_{key}" for side in ("input", "model") for key in MEASURES]
    fields = ["image", "rainy", "clean", "derained", *measures, "psnr_y_gain"]
    means = {f"{side}_{key}": value for side, values in result["means"].items() for key, value in values.items()}
    means.update(image="mean", psnr_y_gain=means["model_psnr_y"] - means["input_psnr_y"])
    with atomic_output(path) as temporary:
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(result["images"])
            writer.writerow(means)


def summary_text(table, models, data, count, tile_size, overlap):
    """summary.md: the table and everything needed to reproduce it."""
    model_lines = "\n".join(f"- {name}: `{path}`" for name, path in models)
    return (
        f"# Deraining scores\n\n{table}\n\n"
        f"Data: `{data}`, {count} pair(s). Model(s):\n{model_lines}\n\n"
        f"Inference: `keras_derain.inference.Derainer`, tile size {tile_size}, overlap {overlap}.\n\n"
        f"Convention: {CONVENTION}\n"
    )


def write_report(result, out_dir, *, data, name=None):
    """``metrics.csv``, ``summary.md`` and ``grid.jpg`` for one `evaluate` result in ``out_dir``."""
    from keras_derain.atomic import atomic_output

    out_dir = Path(out_dir)
    name = name or Path(result["model"]).stem
    write_metrics_csv(result, out_dir / "metrics.csv")
    table = markdown_table([(INPUT_LABEL, result["means"]["input"]), (name, result["means"]["model"])])
    text = summary_text(table, [(name, result["model"])], data, len(result["images"]),
                        result["tile_size"], result["overlap"])
    with atomic_output(out_dir / "summary.md") as temporary:
        temporary.write_text(text)
    if all(row["derained"] is not None for row in result["images"]):
        write_quality_grid(result["images"], out_dir / "grid.jpg")
    return table


def extremes(rows, count=GRID_IMAGES):
    """Up to ``count`` worst then ``count`` best rows by PSNR-Y gain, each once (few images: split in two)."""
    ranked = sorted(rows, key=lambda row: row["psnr_y_gain"])
    worst = ranked[: min(count, len(ranked) // 2)]
    best = ranked[len(worst) :][::-1][:count]
    return [("worst", row) for row in worst] + [("best", row) for row in best]


def write_quality_grid(rows, path):
    """rainy | derained | clean for the worst and best images, as a small JPEG."""
    from keras_derain.data import read_rgb

    chosen = extremes(rows)
    panels = [[read_rgb(row["rainy"]), read_rgb(row["derained"]), read_rgb(row["clean"])] for _, row in chosen]
    labels = [f"{rank}: {row['image']}\nPSNR-Y {row['psnr_y_gain']:+.2f} dB" for rank, row in chosen]
    write_grid(panels, ["rainy", "derained", "clean"], labels, path)


def write_grid(panels, column_titles, row_labels, path):
    """A JPEG grid: one row of equally sized panels (uint8 RGB) per entry, titled columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_derain.atomic import atomic_output

    height, width = panels[0][0].shape[:2]
    panel_inches = GRID_WIDTH / 100
    figure, axes = plt.subplots(
        len(panels), len(column_titles), squeeze=False,
        figsize=(panel_inches * len(column_titles) + 1.2, panel_inches * height / width * len(panels) + 0.4),
    )
    for row_index, (row, label) in enumerate(zip(panels, row_labels)):
        for column_index, image in enumerate(row):
            axis = axes[row_index][column_index]
            axis.imshow(shrink(image))
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(column_titles[column_index], fontsize=9)
        axes[row_index][0].set_ylabel(label, fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(figure)


def shrink(image):
    """At most `GRID_WIDTH` pixels wide, same aspect: the grid stays small whatever the photo size."""
    from PIL import Image

    height, width = image.shape[:2]
    if width <= GRID_WIDTH:
        return image
    size = (GRID_WIDTH, max(1, round(height * GRID_WIDTH / width)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def derain_folder(derainers, names, folder, out_dir, progress=False):
    """``--no-reference``: derain every photo in ``folder`` with each model into ``out_dir[/NAME]``.

    The `keras_derain.predict` batch: each failure is one ``(path, message)``
    and the rest go on; existing outputs are replaced. Writes ``grid.jpg``
    (rainy | each model) for the first photos that every model derained.
    Returns the failures (a photo once per model it failed with).
    """
    from keras_derain.data import DatasetError
    from keras_derain.predict import collect_inputs, derain_files

    out_dirs = [Path(out_dir) / name for name in names] if len(names) > 1 else [Path(out_dir)]
    failures, photos = [], None
    for derainer, model_out in zip(derainers, out_dirs):
        batch = collect_inputs([folder], model_out)
        if not batch.photos:
            raise DatasetError(f"{folder}: no images in this folder")
        photos = photos or [path for path, _ in batch.photos]
        failures += batch.failures
        failures += [(path, message) for path, message in derain_files(derainer, batch.photos, progress) if message]
    failed = {path for path, _ in failures}
    shown = [photo for photo in photos if photo not in failed][:NO_REFERENCE_GRID_IMAGES]
    if shown:
        write_no_reference_grid(shown, names, out_dirs, Path(out_dir) / "grid.jpg")
    return failures


def write_no_reference_grid(photos, names, out_dirs, path):
    """rainy | each model's output, one row per photo."""
    from keras_derain.data import read_rgb
    from keras_derain.predict import output_path

    panels = [[read_rgb(photo)] + [read_rgb(output_path(photo, model_out)) for model_out in out_dirs]
              for photo in photos]
    write_grid(panels, ["rainy"] + list(names), [photo.stem for photo in photos], path)


def parse_args(argv=None):
    from keras_derain.predict import pixel_count

    parser = argparse.ArgumentParser(
        prog="python -m keras_derain.evaluate",
        description="PSNR/SSIM (Y and RGB) of derained photos and of the rainy input against the clean ones.",
    )
    parser.add_argument("--model", type=Path, action="append",
                        help="a .keras generator, a SavedModel folder or an .onnx file; repeat to compare "
                             "(default: the shipped one)")
    parser.add_argument("--data", type=Path, required=True,
                        help="pairs: a Raindrop-layout folder (data/+gt/, or the dataset with --split) or "
                             "rainy/+clean/; with --no-reference, a folder of rainy photos")
    parser.add_argument("--split", help="sub-folder of --data, e.g. test_a")
    parser.add_argument("--names", help="comma-separated labels for the models, in --model order")
    parser.add_argument("--out", type=Path, help="output folder (default: eval/<model>-<data>)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help=f"tile side for large photos (default: {DEFAULT_TILE_SIZE})")
    parser.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default: 32)")
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger photos, from their header (default: {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--no-reference", action="store_true",
                        help="no ground truth: write the derained photos and a grid, no metrics")
    return parser.parse_args(argv)


def data_label(data, split):
    """How the data is named in the default output folder: ``Raindrop-test_a``."""
    name = Path(data).resolve().name or "data"
    return f"{name}-{split}" if split else name


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        bar_line = "\n" if sys.stdout.isatty() else ""  # end the progress bar's line first
        print(f"{bar_line}interrupted: outputs written so far are whole; no report", file=sys.stderr)
        return 130


def run(args):
    """The command after parsing: find the pairs, check --out, load the models, evaluate and report."""
    from keras_derain.atomic import check_writable
    from keras_derain.data import DatasetError, find_pairs
    from keras_derain.inference import InferenceError
    from keras_derain.predict import out_error

    try:
        pairs = None if args.no_reference else find_pairs(args.data, args.split)
        derainers = [as_derainer(model, tile_size=args.tile_size, overlap=args.overlap, max_pixels=args.max_pixels)
                     for model in (args.model or [None])]
        names = check_names(args.names.split(",") if args.names else None, [d.path for d in derainers])
    except (DatasetError, InferenceError, ValueError) as error:
        return fail(str(error))
    data = args.data / args.split if args.split else args.data
    out_dir = args.out or Path("eval") / f"{'-vs-'.join(names)}-{data_label(args.data, args.split)}"
    try:
        check_writable(out_dir)
    except OSError as error:
        return fail(out_error(out_dir, error))
    try:
        if args.no_reference:
            return report_no_reference(derainers, names, data, out_dir)
        return report(derainers, names, pairs, data, out_dir)
    except (DatasetError, InferenceError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"--out {out_dir}: cannot write there ({error.strerror or error})")


def report(derainers, names, pairs, data, out_dir):
    """Evaluate, print the table and per-image lines, write the files; exit status 0."""
    from keras_derain.atomic import atomic_output

    print(f"{len(pairs)} pair(s) in {data}; {len(derainers)} model(s) -> {out_dir}")
    if len(derainers) == 1:
        result = evaluate(derainers[0], pairs, out_dir=out_dir, progress=sys.stdout.isatty())
        table = write_report(result, out_dir, data=data, name=names[0])
        print("\n".join(image_lines(result)))
    else:
        comparison = compare(derainers, pairs, names=names, out_dir=out_dir, progress=sys.stdout.isatty())
        for name, result in zip(names, comparison["results"]):
            write_report(result, out_dir / name, data=data, name=name)
            print(f"{name}:\n  " + "\n  ".join(image_lines(result)))
        table = comparison["table"]
        first = comparison["results"][0]
        text = summary_text(table, [(name, r["model"]) for name, r in zip(names, comparison["results"])],
                            data, len(pairs), first["tile_size"], first["overlap"])
        with atomic_output(out_dir / "summary.md") as temporary:
            temporary.write_text(text)
    print(f"\n{table}\n\n{CONVENTION}\nwritten to {out_dir}")
    return 0


def report_no_reference(derainers, names, folder, out_dir):
    """Derain without ground truth; exit status 1 if any photo failed."""
    print(f"no reference: {folder}; {len(derainers)} model(s) -> {out_dir}")
    failures = derain_folder(derainers, names, folder, out_dir, progress=sys.stdout.isatty())
    for _, message in failures:
        print(f"failed: {message}", file=sys.stderr)
    failed = f"; {len(failures)} failed" if failures else ""
    print(f"written to {out_dir} (derained photos and grid.jpg; no metrics without ground truth){failed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
