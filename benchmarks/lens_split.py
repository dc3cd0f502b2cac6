"""Split the 100 real lens pairs into 80 for training and 20 for validation, by crop origin.

``../shared/data/raindrop_real_lens/MAP.tsv`` maps each pair ``N`` to the crop it
was cut from, ``GRID_CELL`` (e.g. ``800-26_03``): ``GRID`` names one result grid
of the source repository, and every crop of one grid shares its frames, so
crops of one grid may overlap or show the same scene. The rule:

1. Group the pairs by ``GRID`` (the origin; 10 origins of 10 crops each here).
2. Order the origins by the SHA-256 of their name: a fixed, content-blind shuffle.
3. Take origins in that order into validation until it holds at least
   ``--val-fraction`` (0.2) of the pairs; the rest train. No origin is in both.

Writes ``benchmarks/results/lens_split.json`` (the rule, the origins and the file
names of each side) and, with ``--materialise DIR``, ``DIR/train/{data,gt}`` and
``DIR/val/{data,gt}`` of symbolic links to the pairs, which ``train.py --data`` and
``--val`` read as they are.

Example:
    python benchmarks/lens_split.py --materialise ~/lens_split
    python train.py --init pix2pix --data ~/lens_split/train --val ~/lens_split/val ...
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "raindrop_real_lens"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "lens_split.json"
RULE = (
    "pairs grouped by crop origin (the result grid before '_' in MAP.tsv); origins ordered by the SHA-256 of "
    "their name; origins taken in that order into validation until it holds at least VAL_FRACTION of the "
    "pairs; the rest train; no origin in both"
)


def read_map(data):
    """``{pair key: origin}`` from ``MAP.tsv`` (``N<TAB>GRID_CELL`` per line)."""
    path = Path(data) / "MAP.tsv"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (the lens pairs' map of crop origins)")
    origins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or "_" not in fields[1]:
            raise ValueError(f"{path}:{number}: expected 'N<TAB>GRID_CELL', got {line!r}")
        origins[fields[0]] = fields[1].rsplit("_", 1)[0]
    return origins


def split_by_origin(origins, val_fraction=0.2):
    """``(train_keys, val_keys, train_origins, val_origins)``: whole origins on each side (see the rule)."""
    by_origin = {}
    for key, origin in origins.items():
        by_origin.setdefault(origin, []).append(key)
    order = sorted(by_origin, key=lambda origin: hashlib.sha256(origin.encode()).hexdigest())
    val_origins = []
    while sum(len(by_origin[origin]) for origin in val_origins) < val_fraction * len(origins):
        val_origins.append(order[len(val_origins)])
    train_origins = [origin for origin in order if origin not in val_origins]

    def keys(chosen):
        return sorted((key for origin in chosen for key in by_origin[origin]), key=int)

    return keys(train_origins), keys(val_origins), sorted(train_origins), sorted(val_origins)


def pair_files(data, key):
    """The rainy and clean files of pair ``key`` (Raindrop layout: data/N_rain.png, gt/N_clean.png)."""
    rainy, clean = Path(data) / "data" / f"{key}_rain.png", Path(data) / "gt" / f"{key}_clean.png"
    for path in (rainy, clean):
        if not path.is_file():
            raise ValueError(f"{path}: listed in MAP.tsv but missing")
    return rainy, clean


def materialise(data, split, folder):
    """``folder/{train,val}/{data,gt}`` of symbolic links to the pairs; refuses a folder already there."""
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder}: not empty; give a new folder")
    for side in ("train", "val"):
        for sub in ("data", "gt"):
            (folder / side / sub).mkdir(parents=True)
        for key in split[side]:
            rainy, clean = pair_files(data, key)
            (folder / side / "data" / rainy.name).symlink_to(rainy.resolve())
            (folder / side / "gt" / clean.name).symlink_to(clean.resolve())


def main(argv=None):
    parser = argparse.ArgumentParser(description="Split the lens pairs 80/20 by crop origin.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the lens pairs (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of pairs in validation (default 0.2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the split file (default: %(default)s)")
    parser.add_argument("--materialise", type=Path, metavar="DIR",
                        help="also write DIR/train and DIR/val, folders of symbolic links to the pairs")
    args = parser.parse_args(argv)
    try:
        if not 0.0 < args.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
        origins = read_map(args.data)
        train, val, train_origins, val_origins = split_by_origin(origins, args.val_fraction)
        split = {
            "rule": RULE.replace("VAL_FRACTION", str(args.val_fraction)),
            "data": "shared/data/raindrop_real_lens (data/N_rain.png, gt/N_clean.png; MAP.tsv)",
            "counts": {"train": len(train), "val": len(val), "train_origins": len(train_origins),
                       "val_origins": len(val_origins)},
            "train_origins": train_origins,
            "val_origins": val_origins,
            "train": train,
            "val": val,
            "train_files": [f"data/{key}_rain.png" for key in train],
            "val_files": [f"data/{key}_rain.png" for key in val],
        }
        for key in (*train, *val):
            pair_files(args.data, key)
        if args.materialise:
            materialise(args.data, split, args.materialise)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(split, indent=1) + "\n")
    print(f"train {len(train)} pairs ({', '.join(train_origins)}); val {len(val)} pairs ({', '.join(val_origins)})")
    print(f"wrote {args.out}" + (f" and {args.materialise}/train, {args.materialise}/val" if args.materialise else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
