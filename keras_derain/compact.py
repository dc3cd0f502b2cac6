"""A compact generator file: the architecture plus float16 weights in one ``.npz``.

The shipped default generator lives in the repository, so its size matters: a
float32 ``.keras`` of the 32-channel Pix2Pix U-Net is 42 MB, this is half that.
Weights are stored in float16 and loaded back as float32, so the model computes
in float32 as trained; the rounding changes outputs by about 1e-3 (measured in
``keras_derain/weights/README.md``).

Example:
    >>> from keras_derain.compact import save_compact, load_compact
    >>> save_compact(generator, "generator.f16.npz")  # doctest: +SKIP
    >>> generator = load_compact("generator.f16.npz")  # doctest: +SKIP
"""

import json
from pathlib import Path

import keras
import numpy as np

from keras_derain.atomic import atomic_output
from keras_derain.models import float32_copy

SUFFIX = ".npz"


def save_compact(generator, path):
    """Write ``generator`` (architecture and float16 weights) to ``path`` (``.npz``), atomically."""
    generator = float32_copy(generator)
    arrays = {f"weight_{index:04d}": np.asarray(weight, np.float16) for index, weight in enumerate(generator.get_weights())}
    # A shipped generator carries no training state: layers frozen by ``train.py --train-only`` are written
    # trainable (in the file only; the caller's model is left as it is).
    architecture = json.dumps(_all_trainable(keras.saving.serialize_keras_object(generator)))
    with atomic_output(Path(path)) as temporary:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, architecture=np.array(architecture), **arrays)


def _all_trainable(config):
    """``config`` (a serialised model) with every ``"trainable"`` flag set to True."""
    if isinstance(config, dict):
        return {key: True if key == "trainable" else _all_trainable(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_all_trainable(value) for value in config]
    return config


def load_compact(path):
    """Rebuild the float32 generator saved by :func:`save_compact`."""
    import keras_derain.models  # noqa: F401  (registers the custom layers, if any)

    with np.load(Path(path), allow_pickle=False) as bundle:
        architecture = json.loads(str(bundle["architecture"]))
        names = sorted(name for name in bundle.files if name.startswith("weight_"))
        weights = [bundle[name].astype(np.float32) for name in names]
    generator = keras.saving.deserialize_keras_object(architecture)
    generator.set_weights(weights)
    return generator


def main(argv=None):
    """``python -m keras_derain.compact MODEL.keras OUT.npz``: write a compact copy, print its error."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Write a generator as architecture + float16 weights (.npz).")
    parser.add_argument("model", type=Path, help="a .keras generator")
    parser.add_argument("out", type=Path, help="the .npz to write")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: {args.model}: no such model file", file=sys.stderr)
        return 2
    if args.out.suffix != SUFFIX:
        print(f"error: {args.out}: the output must end in {SUFFIX}", file=sys.stderr)
        return 2
    generator = keras.saving.load_model(str(args.model), compile=False)
    save_compact(generator, args.out)
    # 256: a multiple of every Pix2Pix U-Net's stride (depth <= 8).
    rainy = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    difference = np.max(np.abs(load_compact(args.out)(rainy, training=False) - generator(rainy, training=False)))
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB); float16 weights change outputs by at most {difference:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
