"""Make ``notebooks/images/models_window_vs_lens.jpg``: each shipped model on a window photo and a lens photo.

Rows: a real Raindrop pair (drops on a glass pane, 720x480) and a real RobotCar
lens pair from the lens model's validation split (never trained on): the one
whose PSNR-Y gain under the lens model is the median of the split (not a
chosen best case). Columns:
rainy | ``default`` | ``pix2pix`` | ``lens`` | clean, with each output's PSNR-Y against the
clean image. Needs ``../shared``. Run:

    python benchmarks/make_models_figure.py [--out PATH]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SPLIT = REPO / "benchmarks" / "results" / "lens_split.json"
HEIGHT = 240


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "notebooks" / "images" / "models_window_vs_lens.jpg")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"error: {SHARED} is missing: the figure shows real pairs", file=sys.stderr)
        return 2
    from PIL import Image, ImageDraw

    from keras_derain.data.images import read_rgb
    from keras_derain.inference import Derainer
    from keras_derain.metrics import psnr

    import json

    models = {name: Derainer(name) for name in ("default", "pix2pix", "lens")}
    lens_folder = SHARED / "raindrop_real_lens"
    gains = {}
    for index in json.loads(SPLIT.read_text())["val"]:
        rainy, clean = read_rgb(lens_folder / "data" / f"{index}_rain.png"), read_rgb(lens_folder / "gt" / f"{index}_clean.png")
        gains[index] = float(psnr(models["lens"].derain(rainy), clean, 255, y_channel=True)
                             - psnr(rainy, clean, 255, y_channel=True))
    median = sorted(gains, key=gains.get)[len(gains) // 2]
    rows = []
    for title, folder, index in (("window: Raindrop pair 1", SHARED / "raindrop_real", "1"),
                                 (f"lens: RobotCar pair {median} (validation; the median gain of the lens model)",
                                  lens_folder, median)):
        rainy, clean = read_rgb(folder / "data" / f"{index}_rain.png"), read_rgb(folder / "gt" / f"{index}_clean.png")
        panels = [("rainy", rainy)] + [(name, model.derain(rainy)) for name, model in models.items()]
        panels.append(("clean", clean))
        width = round(HEIGHT * rainy.shape[1] / rainy.shape[0])
        row = []
        for label, image in panels:
            text = label if label == "clean" else f"{label}: {float(psnr(image, clean, 255, y_channel=True)):.2f} dB"
            tile = Image.fromarray(image).resize((width, HEIGHT), Image.LANCZOS)
            draw = ImageDraw.Draw(tile)
            draw.rectangle((0, 0, 7 * len(text) + 8, 14), fill="white")
            draw.text((4, 2), text, fill="black")
            row.append(tile)
        rows.append((title, row))
    sheet_width = max(sum(tile.width for tile in row) for _, row in rows)
    sheet = Image.new("RGB", (sheet_width, len(rows) * (HEIGHT + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    top = 0
    for title, row in rows:
        draw.text((4, top + 3), title, fill="black")
        left = 0
        for tile in row:
            sheet.paste(tile, (left, top + 18))
            left += tile.width
        top += HEIGHT + 18
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=88)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
