"""Keras callbacks for DerainGAN runs: real-pair scores, generator checkpoints, sample grids, plots, NaN guard.

Each writes with :func:`keras_derain.atomic.atomic_output`, so a run killed in
the middle of a write leaves the previous file intact.
"""

import csv
import json
import math
import shutil
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


class PairValidation(keras.callbacks.Callback):
    """Score the generator on whole real pairs after each epoch: ``val_psnr_y`` and ``val_ssim_y``.

    The convention of `keras_derain.evaluate` (the Raindrop papers'): the
    derained photo rounded to uint8, then PSNR and SSIM (scikit-image's
    defaults) on OpenCV's full-range Y rounded to uint8; means over photos.
    Each photo runs whole, reflect-padded to the generator's stride as the
    ``Derainer`` pads it, in inference mode. The scores go into the epoch's
    logs, so list this callback before those that read them (the checkpoint,
    the CSV log).

    Args:
        rainy, clean: lists of uint8 HxWx3 photos, pair by pair.

    Example:
        >>> import numpy as np
        >>> from keras_derain.models import pix2pix_generator
        >>> photo = np.full((20, 30, 3), 128, np.uint8)
        >>> scores = PairValidation([photo], [photo + 10])
        >>> round(scores.input_scores()["rainy_psnr_y"], 2)
        28.13
        >>> sorted(scores.summary(pix2pix_generator(base_channels=4, depth=3)))
        ['derained_psnr_y', 'derained_ssim_y', 'rainy_psnr_y', 'rainy_ssim_y']
    """

    def __init__(self, rainy, clean):
        super().__init__()
        if len(rainy) != len(clean) or not rainy:
            raise ValueError(f"PairValidation needs pairs: got {len(rainy)} rainy and {len(clean)} clean photos")
        self.rainy = [np.asarray(image, np.uint8) for image in rainy]
        self.clean = [np.asarray(image, np.uint8) for image in clean]

    @staticmethod
    def _scores(images, clean):
        from keras_derain.metrics import psnr, ssim

        return (float(np.mean([psnr(image, target, 255, y_channel=True) for image, target in zip(images, clean)])),
                float(np.mean([ssim(image, target, 255, y_channel=True) for image, target in zip(images, clean)])))

    def derain(self, generator):
        """The derained photos, uint8."""
        from keras_derain.export import reflect_pad_to_multiple
        from keras_derain.models import required_multiple

        multiple = required_multiple(generator)
        derained = []
        for rainy in self.rainy:
            signed = rainy[np.newaxis].astype(np.float32) / 127.5 - 1.0
            padded, (top, left) = reflect_pad_to_multiple(signed, multiple)
            generated = keras.ops.convert_to_numpy(generator(padded, training=False))
            derained.append(to_uint8(generated[0, top : top + rainy.shape[0], left : left + rainy.shape[1]]))
        return derained

    def input_scores(self):
        """PSNR-Y and SSIM-Y of the rainy photos themselves (the baseline)."""
        psnr_y, ssim_y = self._scores(self.rainy, self.clean)
        return {"rainy_psnr_y": psnr_y, "rainy_ssim_y": ssim_y}

    def summary(self, generator):
        """The input's and ``generator``'s PSNR-Y and SSIM-Y on the pairs."""
        psnr_y, ssim_y = self._scores(self.derain(generator), self.clean)
        return {**self.input_scores(), "derained_psnr_y": psnr_y, "derained_ssim_y": ssim_y}

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["val_psnr_y"], logs["val_ssim_y"] = self._scores(self.derain(self.model.generator), self.clean)


class GeneratorCheckpoint(keras.callbacks.Callback):
    """Save the generator (not the whole GAN) as ``last.keras`` and, when it improves, ``best.keras``.

    With ``keep_epochs`` every epoch's generator is also kept, as
    ``epochs/epNNN.keras``: the folder ``benchmarks/average_checkpoints.py``
    averages (the mean of a run's last few epochs is often better than any one).

    The best score and its epoch are kept in ``best.json`` beside the models,
    so a resumed run only replaces ``best.keras`` with something better, and
    counts ``patience`` from the best epoch before the kill.

    Args:
        directory: where ``best.keras``, ``last.keras`` and ``best.json`` go.
        monitor: the log to rank by, e.g. ``"val_psnr"``; higher is better.
        patience: stop training after this many epochs without a better score
            (early stopping); None: never.
        save: write the files (False on the workers of a cluster other than
            the chief: they only follow the score, to stop at the same epoch).
        keep_epochs: also keep each epoch's generator in ``epochs/``.
    """

    def __init__(self, directory, monitor="val_psnr", patience=None, save=True, keep_epochs=False):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.patience = patience
        self.save = save
        self.keep_epochs = keep_epochs
        self.record_path = self.directory / "best.json"
        self.best = -math.inf
        self.best_epoch = None
        self.stopped_epoch = None
        if self.record_path.exists():
            record = json.loads(self.record_path.read_text())
            self.best, self.best_epoch = record[monitor], record.get("epoch")

    def on_epoch_end(self, epoch, logs=None):
        # A generator trained under mixed_float16 is saved as float32 (same weights).
        generator = float32_copy(self.model.generator) if self.save else None
        if self.save:
            with atomic_output(self.directory / "last.keras") as path:
                generator.save(path)
            if self.keep_epochs:  # a copy of the file just written, not a second save
                with atomic_output(self.directory / "epochs" / f"ep{epoch + 1:03d}.keras") as path:
                    shutil.copyfile(self.directory / "last.keras", path)
        score = (logs or {}).get(self.monitor)
        if score is not None and math.isfinite(score) and score > self.best:
            self.best, self.best_epoch = float(score), epoch + 1
            if self.save:
                with atomic_output(self.directory / "best.keras") as path:
                    generator.save(path)
                with atomic_output(self.record_path) as path:
                    path.write_text(json.dumps({self.monitor: self.best, "epoch": self.best_epoch}))
        if self.patience and epoch + 1 - (self.best_epoch or 0) >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True


class GeneratorEMA(keras.callbacks.Callback):
    """Validate and save the moving average of the generator's weights, train the raw weights.

    The generator's optimizer keeps the average (Keras' ``use_ema=True``, the
    exponential moving average of the weights after each step). Keras'
    ``SwapEMAWeights`` swaps ``model.optimizer``'s average in; a ``DerainGAN`` has
    two optimizers, so this does the same for ``model.g_optimizer``: the average
    is in the generator during each evaluation and from each epoch's end to the
    next epoch's start, so the callbacks after this one (validation, checkpoints,
    samples) see it, and the generator holds it when ``fit`` returns.

    List it after ``BackupAndRestore``, so that the saved training state holds
    the raw weights beside their average, and before the callbacks that should
    see the average.

    Example::

        gan.fit(data, epochs=5, callbacks=[backup, GeneratorEMA(), checkpoint])
    """

    def __init__(self):
        super().__init__()
        self._swapped = False  # whether the generator holds the average now

    def _optimizer(self):
        optimizer = self.model.g_optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a loss-scale wrapper
        if not getattr(optimizer, "use_ema", False):
            raise ValueError("GeneratorEMA needs a generator optimizer with use_ema=True")
        return optimizer

    def _swap(self):
        optimizer = self._optimizer()
        if not optimizer.iterations.numpy():
            return  # no step yet: the average is not set (Keras copies the weights at the first step)
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            weights = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(weights)
        self._swapped = not self._swapped

    def _to(self, averaged):
        if self._swapped != averaged:
            self._swap()

    def on_epoch_begin(self, epoch, logs=None):
        self._to(False)

    def on_test_begin(self, logs=None):
        self._to(True)

    def on_epoch_end(self, epoch, logs=None):
        self._to(True)

    def on_train_end(self, logs=None):
        self._to(True)


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
        ("Generator PSNR (dB)", [("psnr", "train"), ("val_psnr", "validation"),
                                 ("val_psnr_y", "validation, Y, whole pairs")]),
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
