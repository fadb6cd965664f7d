"""The DQN update's math in backend-neutral ``keras.ops`` (shared by every learner)."""

from __future__ import annotations

from keras import ops

from breakout_dqn import contract


def td_targets(returns, discounts, dones, next_q_target, next_q_online, terminal_target: float | None):
    """n-step TD targets ``[B]``: ``R + gamma^n * Q_target(s', a*)``, no gradient.

    ``a*`` is argmax of the online network (Double DQN) when ``next_q_online`` is given,
    else of the target network (Nature DQN). ``terminal_target`` replaces the target at
    terminal transitions (the Keras example uses -1).
    """
    if next_q_online is not None:
        best = ops.argmax(next_q_online, axis=1)
        next_values = ops.sum(next_q_target * ops.one_hot(best, contract.NUM_ACTIONS), axis=1)
    else:
        next_values = ops.max(next_q_target, axis=1)
    targets = returns + discounts * next_values
    if terminal_target is not None:
        targets = ops.where(dones > 0.5, ops.full_like(targets, terminal_target), targets)
    return ops.stop_gradient(targets)


def huber(errors, delta: float = 1.0):
    """Elementwise Huber loss (Mnih et al. 2015 clip the TD error's gradient at 1)."""
    absolute = ops.abs(errors)
    quadratic = ops.minimum(absolute, delta)
    return 0.5 * quadratic**2 + delta * (absolute - quadratic)


LOSSES = ("huber", "mse")


def td_loss(q_values, actions, targets, loss: str = "huber", weights=None):
    """Mean TD loss between ``Q(s, a)`` and the targets; also returns ``Q(s, a)``.

    ``huber``: the Nature DQN's (quadratic within 1, linear beyond). ``mse``: the mean squared
    TD error, as CleanRL's ``F.mse_loss`` (no factor 1/2). ``weights`` (0 or 1 per row) leaves rows
    out of the mean without changing the batch's shape (PQN's autoreset slots).
    """
    taken = ops.sum(q_values * ops.one_hot(actions, contract.NUM_ACTIONS), axis=1)
    errors = targets - taken
    if loss == "huber":
        per_row = huber(errors)
    elif loss == "mse":
        per_row = ops.square(errors)
    else:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if weights is None:
        return ops.mean(per_row), taken
    return ops.sum(per_row * weights) / ops.maximum(ops.sum(weights), 1.0), taken
