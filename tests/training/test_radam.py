"""RAdam against a numpy transcription of optax.radam's update rule."""

from __future__ import annotations

import numpy as np


def reference_radam(gradients: list[np.ndarray], start: np.ndarray, lr: float, b1=0.9, b2=0.999, eps=1e-8,
                    threshold=5.0) -> list[np.ndarray]:
    params, out = start.astype(np.float64), []
    mu, nu = np.zeros_like(params), np.zeros_like(params)
    rho_inf = 2 / (1 - b2) - 1
    for count, grad in enumerate(gradients, start=1):
        mu = b1 * mu + (1 - b1) * grad
        nu = b2 * nu + (1 - b2) * grad**2
        b2t = b2**count
        rho = rho_inf - 2 * count * b2t / (1 - b2t)
        mu_hat, nu_hat = mu / (1 - b1**count), nu / (1 - b2t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            update = r * mu_hat / (np.sqrt(nu_hat) + eps)
        else:
            update = mu_hat
        params = params - lr * update
        out.append(params.copy())
    return out


def test_radam_follows_the_reference_through_the_warm_up_and_after_it() -> None:
    import keras

    from breakout_dqn.training.radam import RAdam

    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 2)).astype(np.float32)
    gradients = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(12)]  # rho_t passes 5 at step 6
    variable = keras.Variable(start)
    optimizer = RAdam(learning_rate=0.01)
    expected = reference_radam(gradients, start, lr=0.01)
    for gradient, want in zip(gradients, expected, strict=True):
        optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        np.testing.assert_allclose(np.asarray(variable), want, rtol=2e-5, atol=1e-6)
