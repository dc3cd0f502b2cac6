"""The README's real-photo figure: real rainy photos without ground truth, and what each model makes of them.

One row per photo of ``../shared/data/raindrop_real/unpaired`` (all of them: no picking), one column
per model, the rainy photo first. Each photo is scaled to a fixed height first, so the figure stays
small; the models run on the scaled photo.

    python benchmarks/make_real_figure.py default ~/runs/rest-v3/best.keras --labels "Pix2Pix (old default)" "restoration" \
        --out notebooks/images/derained_real.jpg
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def label(image, text):
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    box = draw.textbbox((6, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="built-in names or model files")
    parser.add_argument("--labels", nargs="+", help="one per model (default: the model names)")
    parser.add_argument("--height", type=int, default=240, help="each photo's height in the figure (px)")
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks" / "images" / "derained_real.jpg")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(model).stem for model in args.models]
    if len(labels) != len(args.models):
        parser.error(f"--labels: {len(labels)} labels for {len(args.models)} models")

    from keras_derain.atomic import atomic_output
    from keras_derain.data.images import list_images, read_rgb
    from keras_derain.inference import Derainer

    photos = list_images(SHARED / "raindrop_real" / "unpaired")
    derainers = [Derainer(model) for model in args.models]
    rows = []
    for path in photos:
        image = Image.fromarray(read_rgb(path))
        width = round(image.width * args.height / image.height / 8) * 8
        rainy = np.asarray(image.resize((width, args.height), Image.LANCZOS))
        cells = [label(rainy, f"rainy: {path.name}")]
        cells += [label(derainer.derain(rainy), text) for derainer, text in zip(derainers, labels)]
        rows.append(np.concatenate(cells, axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    with atomic_output(args.out) as path:
        Image.fromarray(np.concatenate(rows, axis=0)).save(path, format="JPEG", quality=80)
    print(f"wrote {args.out} ({len(photos)} photos x {len(args.models)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
