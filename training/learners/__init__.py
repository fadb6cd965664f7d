"""The compiled gradient step behind a small seam: one learner per Keras backend.

A learner owns the online and target networks and the optimizer, and offers
``update(batch) -> (loss, mean_q)``, ``act(frames) -> greedy actions``, ``update_and_act(batches,
frames)`` (the training loop's one compiled call per vector step), ``sync_target()``,
``state() / load_state(state)`` (numpy arrays for checkpoints) and ``sync_to_model()``
(writes its weights into ``online`` for saving). The math is shared: ``training.losses``.
"""

from __future__ import annotations

import keras

from training.config import TrainConfig


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=config.learning_rate,
        epsilon=config.adam_epsilon,
        clipnorm=config.clipnorm or None,
        global_clipnorm=config.global_clipnorm or None,
    )


def make_learner(config: TrainConfig, online: keras.Model, target: keras.Model):
    backend = keras.backend.backend()
    optimizer = make_optimizer(config)
    if backend == "tensorflow":
        from training.learners.tensorflow_learner import TensorFlowLearner

        return TensorFlowLearner(config, online, target, optimizer)
    if backend == "jax":
        from training.learners.jax_learner import JaxLearner

        return JaxLearner(config, online, target, optimizer)
    raise RuntimeError(f"KERAS_BACKEND={backend!r} is not supported; use tensorflow or jax")
