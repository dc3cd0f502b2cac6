"""DerainGAN: a conditional GAN trainer as a subclassed ``keras.Model``.

It trains any generator ``rainy -> clean`` against any discriminator called as
``discriminator([rainy, candidate])`` that returns logits of any shape (one per
image for the cGAN, one per patch for Pix2Pix's PatchGAN), with ``fit``,
``evaluate`` and ``predict`` as usual.
"""

import keras
import tensorflow as tf

from keras_derain import losses
from keras_derain.metrics import PSNR, SSIM

# Restoration terms that compile() can weigh in, each with its tracker "g_NAME".
RESTORATION_TERMS = ("charbonnier", "ssim", "fft", "mask", "nce", "ungated")
# The discriminator layer whose features PatchNCE compares (stride 4 in the PatchGAN).
NCE_LAYER = "block_2_lrelu"


def _unreduced(loss):
    """The same loss without its reduction.

    A Keras ``Loss`` object's own mean is divided by the number of replicas under
    ``tf.distribute``; the trainer averages every loss itself, once
    (``_replica_mean``), so each term is the same local mean on every strategy.
    Plain functions (``keras.losses.binary_crossentropy``) are used as they are.
    """
    if isinstance(loss, keras.losses.Loss):
        return type(loss).from_config({**loss.get_config(), "reduction": None})
    return loss


def _replica_share(logs):
    """The step's logs, shaped for Keras to average across replicas.

    Under MultiWorkerMirroredStrategy Keras averages step outputs along axis 0,
    which scalars lack (keras-team/keras#20585), so there each log is a vector
    of one; elsewhere they stay scalars. Epoch logs come from the metrics
    themselves, which are synchronised across workers either way.
    """
    strategy = tf.distribute.get_strategy()
    # Keras' own test for its multi-worker path (a cluster of one worker is not one).
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and in_multi_worker_mode():
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def _has_mask(generator):
    from keras_derain.models.restoration import has_mask

    return has_mask(generator)


@keras.saving.register_keras_serializable(package="keras_derain")
class DerainGAN(keras.Model):
    """A conditional GAN for deraining: Pix2Pix's objective with the study's penalties.

    The discriminator learns on ``(rainy, clean)`` as real and ``(rainy,
    generated)`` as fake; the generator learns from the adversarial loss (target:
    real) plus ``l1_weight`` times the L1 distance to the clean image.

    One train step runs the generator forward once: the discriminator's and the
    generator's gradients both come from that pass (as in the TensorFlow Pix2Pix
    tutorial). ``g_steps > 1`` adds generator-only updates after it.

    Restoration terms (`keras_derain.losses`) can be weighed in by ``compile``:
    Charbonnier, 1 - SSIM, FFT L1, the mask BCE and PatchNCE. The mask term
    needs a generator with a mask head (`keras_derain.models.restoration_generator`)
    and data that carries the target mask as a third element,
    ``(rainy, clean, mask)`` (``synthetic_dataset(..., return_mask=True)``,
    ``paired_dataset(..., return_mask=True)``); without either it is skipped, so
    any generator and any data source still train.

    Args:
        generator: a Keras model ``rainy -> clean``, images in [-1, 1].
        discriminator: a Keras model called as ``discriminator([rainy, candidate])``
            returning logits.

    Example:
        >>> import keras
        >>> from keras_derain import DerainGAN
        >>> from keras_derain.models import pix2pix_generator, pix2pix_discriminator
        >>> gan = DerainGAN(pix2pix_generator(base_channels=8),
        ...                 pix2pix_discriminator(base_channels=8))
        >>> gan.compile(keras.optimizers.Adam(2e-4, beta_1=0.5),
        ...             keras.optimizers.Adam(2e-4, beta_1=0.5), real_label=0.9, fake_label=0.1)
        >>> # gan.fit(paired_dataset(...), epochs=...)

    Reference:
        Isola et al., "Image-to-Image Translation with Conditional Adversarial
        Networks", CVPR 2017.
    """

    def __init__(self, generator, discriminator, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.g_adv_tracker = keras.metrics.Mean(name="g_adv")
        self.g_l1_tracker = keras.metrics.Mean(name="g_l1")
        self.d_acc_tracker = keras.metrics.Mean(name="d_acc")
        self.l1_tracker = keras.metrics.Mean(name="l1")
        self.term_trackers = {}
        self.image_metrics = [PSNR(), SSIM()]
        self.with_mask = None
        if _has_mask(generator):
            from keras_derain.models.restoration import mask_model

            self.with_mask = mask_model(generator)
        self.nce_features = None
        # Both networks come built (functional models), so the GAN is too; Keras'
        # BackupAndRestore refuses an unbuilt model.
        self.built = bool(generator.built and discriminator.built)

    def compile(
        self,
        g_optimizer,
        d_optimizer,
        *,
        adversarial_loss=None,
        l1_weight=100.0,
        real_label=1.0,
        fake_label=0.0,
        label_flip_rate=0.0,
        g_steps=1,
        metrics=None,
        adversarial_weight=1.0,
        charbonnier_weight=0.0,
        ssim_weight=0.0,
        fft_weight=0.0,
        mask_weight=0.0,
        nce_weight=0.0,
        ungated_weight=0.0,
        **kwargs,
    ):
        """Set the two optimizers, the losses and the discriminator penalties.

        Args:
            g_optimizer, d_optimizer: one optimizer per network; each updates only
                its own network's variables.
            adversarial_loss: a Keras loss on logits; default binary cross-entropy
                from logits. It is called as ``loss(targets, logits)``; its
                values are averaged over everything (images and patches).
            l1_weight: weight of the L1 term in the generator's loss (100 in Pix2Pix;
                0 for a purely adversarial cGAN).
            real_label, fake_label: the discriminator's targets; 0.9 / 0.1 are the
                study's soft labels. The generator's adversarial target is always 1.
            label_flip_rate: probability, per image, of swapping the two targets for
                the discriminator (the study names 0.05-0.1).
            g_steps: generator updates per discriminator update.
            metrics: image-quality metrics on ``(clean, generated)`` in [-1, 1];
                default PSNR and SSIM on RGB.
            adversarial_weight: weight of the adversarial term (1 in Pix2Pix).
            charbonnier_weight, ssim_weight, fft_weight, mask_weight, nce_weight:
                weights of the restoration terms in `keras_derain.losses` (0: off).
                ``nce_weight`` compares the discriminator's ``block_2_lrelu``
                features (a PatchGAN's).
            ungated_weight: weight of the Charbonnier term on the ungated output,
                ``rainy + correction`` against the clean image
                (`keras_derain.models.restoration.ungated_model`; mask-gated
                generators only): it makes the correction right where the mask
                is off, so a soft or false mask does little harm (0: off).
        """
        # No optimizer of Keras' own: ours are the two below (Keras would add an unused RMSprop).
        super().compile(optimizer=None, **kwargs)
        if g_steps < 1 or int(g_steps) != g_steps:
            raise ValueError(f"g_steps must be a positive integer, got {g_steps!r}")
        if not 0.0 <= label_flip_rate <= 1.0:
            raise ValueError(f"label_flip_rate must be in [0, 1], got {label_flip_rate!r}")
        for name, value in (("real_label", real_label), ("fake_label", fake_label)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        weights = {"charbonnier": charbonnier_weight, "ssim": ssim_weight, "fft": fft_weight,
                   "mask": mask_weight, "nce": nce_weight, "ungated": ungated_weight}
        for name, value in (("l1_weight", l1_weight), ("adversarial_weight", adversarial_weight),
                            *((f"{term}_weight", weight) for term, weight in weights.items())):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if nce_weight > 0:
            if not any(layer.name == NCE_LAYER for layer in self.discriminator.layers):
                raise ValueError(f"nce_weight needs a discriminator with a '{NCE_LAYER}' layer (a PatchGAN)")
            self.nce_features = keras.Model(
                self.discriminator.inputs, self.discriminator.get_layer(NCE_LAYER).output, name="nce_features"
            )
        self.with_ungated = None
        if ungated_weight > 0:
            from keras_derain.models.restoration import ungated_model

            self.with_ungated = ungated_model(self.generator)  # ValueError without a mask-gated correction
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        # Build the optimizer states now, so that weights restored before the first
        # step (BackupAndRestore on --resume) include the Adam moments and step counts.
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)
        self.adversarial_loss = _unreduced(adversarial_loss or keras.losses.BinaryCrossentropy(from_logits=True))
        self.l1_weight = float(l1_weight)
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)
        self.label_flip_rate = float(label_flip_rate)
        self.g_steps = int(g_steps)
        self.adversarial_weight = float(adversarial_weight)
        self.term_weights = {term: float(weight) for term, weight in weights.items() if weight > 0}
        self.term_trackers = {term: keras.metrics.Mean(name=f"g_{term}") for term in self.term_weights}
        if metrics is not None:
            self.image_metrics = list(metrics)

    @property
    def metrics(self):
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.g_adv_tracker,
            self.g_l1_tracker,
            self.d_acc_tracker,
            self.l1_tracker,
            *self.term_trackers.values(),
            *self.image_metrics,
        ]

    def call(self, rainy, training=False):
        """The generator, always in inference mode (dropout and batch norm frozen)."""
        return self.generator(rainy, training=False)

    # -- losses -----------------------------------------------------------------------------

    def _replica_mean(self, loss):
        """Scale a local mean so that the all-reduced SUM of gradients is a global mean."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss

    def _targets(self, logits, value):
        return tf.fill(tf.shape(logits), tf.cast(value, logits.dtype))

    def discriminator_loss(self, real_logits, fake_logits):
        """Half the sum of the real and fake terms (as in Pix2Pix), with soft and flipped targets."""
        real_logits = tf.cast(real_logits, tf.float32)
        fake_logits = tf.cast(fake_logits, tf.float32)
        real_targets = self._targets(real_logits, self.real_label)
        fake_targets = self._targets(fake_logits, self.fake_label)
        if self.label_flip_rate > 0.0:
            batch = tf.shape(real_logits)[0]
            flip_shape = tf.concat([[batch], tf.ones([tf.rank(real_logits) - 1], tf.int32)], 0)
            flip = keras.random.uniform(flip_shape, seed=self.seed_generator) < self.label_flip_rate
            real_targets, fake_targets = (
                tf.where(flip, fake_targets, real_targets),
                tf.where(flip, real_targets, fake_targets),
            )
        real_loss = tf.reduce_mean(self.adversarial_loss(real_targets, real_logits))
        fake_loss = tf.reduce_mean(self.adversarial_loss(fake_targets, fake_logits))
        return 0.5 * (real_loss + fake_loss)

    def generator_losses(self, clean, generated, fake_logits):
        """Returns ``(total, adversarial, l1)``; the adversarial target is real (1)."""
        fake_logits = tf.cast(fake_logits, tf.float32)
        adversarial = tf.reduce_mean(self.adversarial_loss(self._targets(fake_logits, 1.0), fake_logits))
        l1 = tf.reduce_mean(tf.abs(tf.cast(clean, tf.float32) - tf.cast(generated, tf.float32)))
        return self.adversarial_weight * adversarial + self.l1_weight * l1, adversarial, l1

    def restoration_terms(self, rainy, clean, generated, target_mask=None, predicted_mask=None, ungated=None):
        """The compiled restoration terms, unweighted: ``{term: loss}``.

        The mask term needs both masks, the ungated term the ungated output.
        """
        terms = {}
        if "charbonnier" in self.term_weights:
            terms["charbonnier"] = losses.charbonnier(clean, generated)
        if "ssim" in self.term_weights:
            terms["ssim"] = losses.ssim_loss(clean, generated)
        if "fft" in self.term_weights:
            terms["fft"] = losses.fft_l1(clean, generated)
        if "mask" in self.term_weights and target_mask is not None and predicted_mask is not None:
            terms["mask"] = losses.mask_bce(target_mask, predicted_mask)
        if "nce" in self.term_weights:
            terms["nce"] = losses.patch_nce(
                self.nce_features([rainy, generated], training=True),
                self.nce_features([rainy, clean], training=True),
                self.nce_features([rainy, rainy], training=True),
                seed=self.seed_generator,
            )
        if "ungated" in self.term_weights and ungated is not None:
            terms["ungated"] = losses.charbonnier(clean, ungated)
        return terms

    def _generate(self, rainy, training):
        """The generated image, the predicted mask and the ungated output (each None when not needed)."""
        if self.with_ungated is not None:
            return tuple(self.with_ungated(rainy, training=training))
        if self.with_mask is not None:
            generated, mask = self.with_mask(rainy, training=training)
            return generated, mask, None
        return self.generator(rainy, training=training), None, None

    def _total_generator_loss(self, rainy, clean, generated, fake_logits, target_mask, predicted_mask, ungated=None):
        g_loss, g_adv, g_l1 = self.generator_losses(clean, generated, fake_logits)
        terms = self.restoration_terms(rainy, clean, generated, target_mask, predicted_mask, ungated)
        for term, value in terms.items():
            g_loss = g_loss + self.term_weights[term] * value
        return g_loss, g_adv, g_l1, terms

    # -- steps ------------------------------------------------------------------------------

    def _scaled(self, optimizer, loss):
        """The loss to differentiate: replica-averaged and loss-scaled (mixed precision).

        Must run inside the tape, or the gradients are disconnected.
        """
        return optimizer.scale_loss(self._replica_mean(loss))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Both networks, the trackers and the optimizers are built already, so
        # Keras' symbolic build has nothing to do. Skipping it matters under
        # MultiWorkerMirroredStrategy: Keras first reduces a data batch across
        # workers there, which fails (keras-team/keras#20585).
        if self.built and self.g_optimizer.built and self.d_optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        rainy, clean = data[0], data[1]
        target_mask = data[2] if len(data) > 2 else None
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated, predicted_mask, ungated = self._generate(rainy, training=True)
            real_logits = self.discriminator([rainy, clean], training=True)
            fake_logits = self.discriminator([rainy, generated], training=True)
            d_loss = self.discriminator_loss(real_logits, fake_logits)
            g_loss, g_adv, g_l1, terms = self._total_generator_loss(
                rainy, clean, generated, fake_logits, target_mask, predicted_mask, ungated
            )
            d_scaled = self._scaled(self.d_optimizer, d_loss)
            g_scaled = self._scaled(self.g_optimizer, g_loss)
        # Both gradients from the one forward pass, then both updates.
        d_gradients = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
        g_gradients = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        self.d_optimizer.apply(d_gradients, self.discriminator.trainable_variables)
        self.g_optimizer.apply(g_gradients, self.generator.trainable_variables)

        d_acc = 0.5 * (
            tf.reduce_mean(tf.cast(real_logits > 0, tf.float32))
            + tf.reduce_mean(tf.cast(fake_logits < 0, tf.float32))
        )
        for _ in range(self.g_steps - 1):
            with tf.GradientTape() as g_tape:
                generated, predicted_mask, ungated = self._generate(rainy, training=True)
                fake_logits = self.discriminator([rainy, generated], training=True)
                g_loss, g_adv, g_l1, terms = self._total_generator_loss(
                    rainy, clean, generated, fake_logits, target_mask, predicted_mask, ungated
                )
                g_scaled = self._scaled(self.g_optimizer, g_loss)
            g_gradients = g_tape.gradient(g_scaled, self.generator.trainable_variables)
            self.g_optimizer.apply(g_gradients, self.generator.trainable_variables)

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.g_adv_tracker.update_state(g_adv)
        self.g_l1_tracker.update_state(g_l1)
        self.d_acc_tracker.update_state(d_acc)
        for term, value in terms.items():
            self.term_trackers[term].update_state(value)
        generated = tf.cast(generated, tf.float32)
        for metric in self.image_metrics:
            metric.update_state(clean, generated)
        return _replica_share({metric.name: metric.result() for metric in self.metrics if metric is not self.l1_tracker})

    def test_step(self, data):
        rainy, clean = data[0], data[1]
        generated = tf.cast(self.generator(rainy, training=False), tf.float32)
        # One value per image: a replica's empty last batch then adds nothing (a mean would add NaN).
        self.l1_tracker.update_state(tf.reduce_mean(tf.abs(tf.cast(clean, tf.float32) - generated), axis=[1, 2, 3]))
        for metric in self.image_metrics:
            metric.update_state(clean, generated)
        return _replica_share({metric.name: metric.result() for metric in (*self.image_metrics, self.l1_tracker)})

    def predict_step(self, data):
        rainy = data[0] if isinstance(data, (tuple, list)) else data
        return self.generator(rainy, training=False)

    # -- serialisation ----------------------------------------------------------------------

    def get_config(self):
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)
