"""Keras callbacks for DerainGAN runs: generator checkpoints, sample grids, plots, NaN guard.

Each writes with :func:`keras_derain.atomic.atomic_output`, so a run killed in
the middle of a write leaves the previous file intact.
"""

import csv
import json
import math
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_derain.atomic import atomic_output
from keras_derain.models import float32_copy


def to_uint8(images):
    """[-1, 1] floats -> uint8 in [0, 255]."""
    images = np.nan_to_num(np.asarray(images, np.float32))  # a diverged run still gets its grid
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def sample_grid(rainy, generated, clean):
    """One uint8 image: a row per sample, columns rainy | generated | clean (inputs in [-1, 1])."""
    rows = [np.concatenate(columns, axis=1) for columns in zip(to_uint8(rainy), to_uint8(generated), to_uint8(clean))]
    return np.concatenate(rows, axis=0)


class SampleGrid(keras.callbacks.Callback):
    """Save ``samples/epoch_NNN.png`` (rainy | generated | clean) on a fixed batch each epoch.

    Args:
        rainy, clean: the fixed batch, arrays in [-1, 1].
        directory: where the PNGs go.

    Example:
        >>> grid = SampleGrid(rainy, clean, "runs/demo/samples")  # doctest: +SKIP
    """

    def __init__(self, rainy, clean, directory):
        super().__init__()
        self.rainy = np.asarray(rainy)
        self.clean = np.asarray(clean)
        self.directory = Path(directory)

    def on_epoch_end(self, epoch, logs=None):
        generated = self.model.generator(self.rainy, training=False)
        with atomic_output(self.directory / f"epoch_{epoch + 1:03d}.png") as path:
            Image.fromarray(sample_grid(self.rainy, generated, self.clean)).save(path, format="PNG")


class GeneratorCheckpoint(keras.callbacks.Callback):
    """Save the generator (not the whole GAN) as ``last.keras`` and, when it improves, ``best.keras``.

    The best score is kept in ``best.json`` beside the models, so a resumed run
    only replaces ``best.keras`` with something better.

    Args:
        directory: where ``best.keras``, ``last.keras`` and ``best.json`` go.
        monitor: the log to rank by, e.g. ``"val_psnr"``; higher is better.
    """

    def __init__(self, directory, monitor="val_psnr"):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.record_path = self.directory / "best.json"
        self.best = -math.inf
        if self.record_path.exists():
            self.best = json.loads(self.record_path.read_text())[monitor]

    def on_epoch_end(self, epoch, logs=None):
        # A generator trained under mixed_float16 is saved as float32 (same weights).
        generator = float32_copy(self.model.generator)
        with atomic_output(self.directory / "last.keras") as path:
            generator.save(path)
        score = (logs or {}).get(self.monitor)
        if score is None or not math.isfinite(score) or score <= self.best:
            return
        self.best = float(score)
        with atomic_output(self.directory / "best.keras") as path:
            generator.save(path)
        with atomic_output(self.record_path) as path:
            path.write_text(json.dumps({self.monitor: self.best, "epoch": epoch + 1}))


class StopOnNaN(keras.callbacks.Callback):
    """Stop training when a loss becomes NaN or infinite, remembering which and when.

    ``TerminateOnNaN`` watches only ``logs["loss"]``, which a GAN does not have.
    After ``fit`` returns, ``stopped`` holds a one-line reason or ``None``.
    """

    def __init__(self, keys=("d_loss", "g_loss")):
        super().__init__()
        self.keys = keys
        self.stopped = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key in self.keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                self.stopped = f"{key} became {float(value)} at epoch {self._epoch + 1}, batch {batch + 1}"
                self.model.stop_training = True
                return


def read_history(csv_path):
    """The columns of a ``CSVLogger`` file as ``{name: [float, ...]}``."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {}
    for row in rows:
        for name, value in row.items():
            columns.setdefault(name, []).append(float(value) if value not in ("", None) else math.nan)
    return columns


def plot_history(history, path):
    """The study's four panels: G and D losses, PSNR, discriminator accuracy, L1 (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(epoch) + 1 for epoch in history.get("epoch", range(len(history.get("g_loss", []))))]
    panels = [
        ("Losses", [("g_adv", "G adversarial"), ("d_loss", "D")]),
        ("Generator PSNR (dB)", [("psnr", "train"), ("val_psnr", "validation")]),
        ("Discriminator accuracy", [("d_acc", "D accuracy")]),
        ("Generator L1", [("g_l1", "train"), ("val_l1", "validation")]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for axis, (title, series) in zip(axes, panels):
        for key, label in series:
            if key in history:
                axis.plot(epochs, history[key], marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)


class HistoryPlots(keras.callbacks.Callback):
    """Redraw ``plot_history`` from the CSV log after each epoch (so a resumed run plots it all)."""

    def __init__(self, csv_path, path):
        super().__init__()
        self.csv_path = Path(csv_path)
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        # CSVLogger (listed before this callback) has written this epoch's row.
        if self.csv_path.exists():
            plot_history(read_history(self.csv_path), self.path)
