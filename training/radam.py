"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") for Keras 3.

Keras ships no RAdam; PQN (CleanRL and purejaxql) trains with it. The update follows optax's
``radam`` (purejaxql's optimizer): Adam's moments with bias correction; while the variance of the
adaptive rate is intractable (``rho_t <= threshold``, the first ~5 steps) the step is the
bias-corrected momentum alone, afterwards it is Adam's step scaled by the rectification term ``r_t``.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="breakout_dqn")
class RAdam(keras.optimizers.Optimizer):
    def __init__(self, learning_rate=1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 threshold: float = 5.0, name: str = "radam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.threshold = beta_1, beta_2, epsilon, threshold

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient, learning_rate = ops.cast(gradient, dtype), ops.cast(learning_rate, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        self.assign_add(momentum, ops.multiply(ops.subtract(gradient, momentum), 1 - beta_1))
        self.assign_add(velocity, ops.multiply(ops.subtract(ops.square(gradient), velocity), 1 - beta_2))
        beta_2_power = ops.power(beta_2, step)
        rho_infinity = 2.0 / (1.0 - beta_2) - 1.0
        rho = rho_infinity - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
        momentum_hat = ops.divide(momentum, 1.0 - ops.power(beta_1, step))
        velocity_hat = ops.divide(velocity, 1.0 - beta_2_power)
        safe_rho = ops.maximum(rho, self.threshold + 1.0)  # keeps the square root real on the branch not taken
        rectification = ops.sqrt((safe_rho - 4.0) * (safe_rho - 2.0) * rho_infinity
                                 / ((rho_infinity - 4.0) * (rho_infinity - 2.0) * safe_rho))
        adaptive = ops.divide(ops.multiply(momentum_hat, rectification), ops.add(ops.sqrt(velocity_hat), self.epsilon))
        update = ops.where(rho >= self.threshold, adaptive, momentum_hat)
        self.assign_sub(variable, ops.multiply(learning_rate, update))

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, threshold=self.threshold)
        return config
