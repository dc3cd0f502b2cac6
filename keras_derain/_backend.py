"""Fail early, with one clear message, when Keras does not run on TensorFlow."""

import os


def check_backend():
    """Raise ImportError unless Keras 3 uses the TensorFlow backend.

    The data pipeline is ``tf.data`` and the trainer's ``train_step`` uses
    ``tf.GradientTape``, so the JAX and PyTorch backends cannot work.
    """
    requested = os.environ.get("KERAS_BACKEND")
    if requested and requested != "tensorflow":
        raise ImportError(
            f"keras_derain needs the TensorFlow backend, but KERAS_BACKEND={requested!r}; "
            "unset it or set KERAS_BACKEND=tensorflow"
        )
    import keras

    major = int(keras.__version__.split(".")[0])
    if major < 3:
        raise ImportError(f"keras_derain needs Keras 3, found keras {keras.__version__}")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"keras_derain needs the TensorFlow backend, but Keras uses {backend!r} "
            "(see ~/.keras/keras.json or KERAS_BACKEND)"
        )
