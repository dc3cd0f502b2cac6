"""Restoration losses for the generator, each a plain function ``(clean, generated) -> scalar``.

Images are float tensors in ``[-1, 1]``, NHWC, as the generators produce them.
`DerainGAN` weighs each by a flag (``--charbonnier-weight``, ``--ssim-weight``,
``--fft-weight``, ``--mask-weight``, ``--nce-weight``, ``--ungated-weight`` in ``train.py``;
the last is :func:`charbonnier` on the restoration generator's ungated output).

- :func:`charbonnier`: a smooth L1 (MPRNet, and most restoration networks).
- :func:`ssim_loss`: ``1 - SSIM`` on RGB (Hao et al. 2019 train with 0.3 of it).
- :func:`fft_l1`: L1 between the 2-D Fourier transforms (MIMO-UNet's 0.1 x FFT loss):
  it weighs the sharp, high-frequency detail that drops blur away.
- :func:`mask_bce`: binary cross-entropy of a predicted drop mask against the
  renderer's (or a real pair's thresholded) mask.
- :func:`patch_nce`: the study's "contrastive loss for the white spots", as
  InfoNCE over patches (CUT's PatchNCE), on the features of a network of our
  own, no pretrained weights: a derained patch must be closer to the clean
  patch at the same place than to the rainy patch there and to other places.

Example:
    >>> import numpy as np
    >>> clean = np.zeros((1, 16, 16, 3), "float32")
    >>> round(float(charbonnier(clean, clean + 0.5)), 4)
    0.5
"""

import keras
import tensorflow as tf

from keras_derain.metrics import ssim

CHARBONNIER_EPSILON = 1e-3
NCE_TEMPERATURE = 0.07


def charbonnier(clean, generated, epsilon=CHARBONNIER_EPSILON):
    """Mean of ``sqrt((clean - generated)^2 + epsilon^2)``: L1 with a smooth minimum."""
    difference = tf.cast(clean, tf.float32) - tf.cast(generated, tf.float32)
    return tf.reduce_mean(tf.sqrt(difference * difference + epsilon * epsilon))


def ssim_loss(clean, generated):
    """``1 - SSIM`` on RGB (scikit-image's settings), averaged over the batch; images in [-1, 1]."""
    clean = (tf.cast(clean, tf.float32) + 1.0) / 2.0
    generated = (tf.cast(generated, tf.float32) + 1.0) / 2.0
    return 1.0 - tf.reduce_mean(ssim(generated, clean, 1.0))


def fft_l1(clean, generated):
    """Mean absolute difference of the 2-D FFTs (per channel, real and imaginary parts), per pixel."""
    def spectrum(images):
        channels_first = tf.transpose(tf.cast(images, tf.float32), [0, 3, 1, 2])
        transform = tf.signal.rfft2d(channels_first)
        pixels = tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32)
        return tf.concat([tf.math.real(transform), tf.math.imag(transform)], axis=-1) / tf.sqrt(pixels)

    return tf.reduce_mean(tf.abs(spectrum(clean) - spectrum(generated)))


def mask_bce(target_mask, predicted_mask):
    """Binary cross-entropy of a predicted mask (probabilities) against a target in [0, 1]."""
    target_mask = tf.cast(target_mask, tf.float32)
    predicted_mask = tf.clip_by_value(tf.cast(predicted_mask, tf.float32), 1e-6, 1.0 - 1e-6)
    return -tf.reduce_mean(
        target_mask * tf.math.log(predicted_mask) + (1.0 - target_mask) * tf.math.log(1.0 - predicted_mask)
    )


def patch_nce(generated_features, clean_features, rainy_features, *, patches=64, seed=None,
              temperature=NCE_TEMPERATURE):
    """InfoNCE over patches: each derained patch's positive is the clean patch at the same place.

    Features are ``[N, h, w, C]`` maps of one network (e.g. the discriminator's
    or the generator's encoder) for the derained, clean and rainy images. At
    ``patches`` random places per image the derained feature (the query) is
    compared, by cosine similarity over ``temperature``, with the clean feature
    there (the positive), the rainy feature there and the clean features at the
    other places (the negatives). The clean and rainy features are targets:
    no gradient flows into them. ``seed``: an int or a ``keras.random.SeedGenerator``
    for the places.

    Returns:
        The mean cross-entropy of picking the positive.
    """
    shape = tf.shape(generated_features)
    batch, positions = shape[0], shape[1] * shape[2]
    channels = generated_features.shape[-1]
    places = keras.random.randint([batch, patches], 0, positions, dtype="int32", seed=seed)

    def sample(features):
        flat = tf.reshape(tf.cast(features, tf.float32), [batch, positions, channels])
        return tf.math.l2_normalize(tf.gather(flat, places, batch_dims=1), axis=-1)

    query = sample(generated_features)
    clean = tf.stop_gradient(sample(clean_features))
    rainy = tf.stop_gradient(sample(rainy_features))
    # [N, P, P]: query p against the clean patch at every place (the diagonal is the positive).
    clean_scores = tf.einsum("npc,nqc->npq", query, clean)
    rainy_scores = tf.reduce_sum(query * rainy, axis=-1, keepdims=True)  # the rainy patch at the same place
    logits = tf.concat([clean_scores, rainy_scores], axis=-1) / temperature
    labels = tf.tile(tf.range(patches)[None], [batch, 1])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
