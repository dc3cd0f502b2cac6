"""float32_copy: a model trained under ``mixed_float16`` as a float32 model with the same weights.

Keras writes each layer's dtype policy into the model's config, so a generator
trained with ``--mixed-precision`` would be saved, exported and reloaded as a
float16 model: slow on CPUs (``benchmarks/results/scale.md``) and not what we
ship. Run folders, exports and the Derainer therefore hold the float32 copy.

Example:
    >>> import keras
    >>> from keras_derain.models import float32_copy, pix2pix_generator
    >>> keras.config.set_dtype_policy("mixed_float16")
    >>> mixed = pix2pix_generator(base_channels=4, depth=5)
    >>> keras.config.set_dtype_policy("float32")
    >>> float32_copy(mixed).layers[2].compute_dtype
    'float32'
"""

import keras


def is_mixed(model):
    """Whether any layer of ``model`` computes in another dtype than its variables."""
    return any(layer.compute_dtype != layer.variable_dtype for layer in model._flatten_layers())


def float32_copy(model):
    """``model`` itself if it computes in float32, else a float32 clone with its weights."""
    if not is_mixed(model):
        return model

    def rebuild(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # for the clone's own wrapper too
    try:
        copy = keras.models.clone_model(model, clone_function=rebuild)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
