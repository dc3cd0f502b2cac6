"""Make ``notebooks/images/raindrops_grid.jpg``: clean | rendered drops | a real rainy photo.

Rows are 256x256 crops of the built-in clean photos with the default drops, next to
crops of real rainy photos from the Raindrop dataset (``../shared/data/raindrop_real``)
at the same scale relative to the short side (a 480x480 window shrunk to 256). The real
column is left out when ``../shared`` is absent. Run:

    python benchmarks/make_raindrop_figure.py [--seed 0] [--out PATH]
"""

from pathlib import Path
import argparse
import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_FOLDER = REPO.parent / "shared" / "data" / "raindrop_real"
CROP = 256


def clean_crops(count, seed):
    from keras_derain.data.images import read_rgb
    from keras_derain.data.synthetic import builtin_clean_images

    rng = np.random.default_rng(seed)
    paths = builtin_clean_images()
    crops = []
    for path in rng.choice(paths, count, replace=False):
        image = read_rgb(path)
        top = rng.integers(0, image.shape[0] - CROP + 1)
        left = rng.integers(0, image.shape[1] - CROP + 1)
        crops.append(image[top : top + CROP, left : left + CROP] / 255.0)
    return np.float32(crops)


def real_crops(count):
    """Square crops (the full height) of the real rainy photos, shrunk to CROP."""
    from PIL import Image

    paths = sorted((REAL_FOLDER / "unpaired").glob("*.png")) + sorted((REAL_FOLDER / "data").glob("*.png"))
    crops = []
    for index, path in enumerate(paths[:count]):
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left = (image.width - side) // 2 + (index % 2) * (image.width - side) // 3
            crops.append(np.asarray(image.crop((left, 0, left + side, side)).resize((CROP, CROP), Image.LANCZOS)))
    return [crop / 255.0 for crop in crops]


def make_figure(out, rows=4, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from keras_derain.data.raindrops import render_raindrops

    clean = clean_crops(rows, seed)
    rainy = render_raindrops(clean, seed=seed).numpy()
    real = real_crops(rows) if REAL_FOLDER.is_dir() else []
    columns = [("clean (Kodak)", clean), ("rendered drops (defaults)", rainy)]
    if real:
        columns.append(("real raindrops (Raindrop dataset)", real))
    figure, axes = plt.subplots(rows, len(columns), figsize=(3 * len(columns), 3 * rows), squeeze=False)
    for column, (title, images) in enumerate(columns):
        for row in range(rows):
            axis = axes[row, column]
            if row < len(images):
                axis.imshow(np.clip(images[row], 0, 1))
            axis.set_axis_off()
        axes[0, column].set_title(title, fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    # JPEG keeps the repository small (a PNG of photos is over 1 MB).
    figure.savefig(out, dpi=80, pil_kwargs={"quality": 85})
    plt.close(figure)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "notebooks" / "images" / "raindrops_grid.jpg")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if not REAL_FOLDER.is_dir():
        print(f"{REAL_FOLDER} is absent: the real column is left out")
    print(f"wrote {make_figure(args.out, rows=args.rows, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
