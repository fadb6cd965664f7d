"""Checkpoint arrays <-> Keras variables, with shape checks."""

from __future__ import annotations

import numpy as np


def assign_arrays(name: str, variables, values: list[np.ndarray]) -> None:
    """Assign ``values`` to ``variables`` or raise ValueError naming what does not match."""
    if len(variables) != len(values):
        raise ValueError(f"checkpoint {name} holds {len(values)} arrays, the model needs {len(variables)}")
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"checkpoint {name} array shape {value.shape} != {tuple(variable.shape)}")
        variable.assign(value)


def learner_arrays(online, target, optimizer) -> dict[str, list[np.ndarray]]:
    """The arrays a checkpoint holds: online and target weights, and the optimizer's state."""
    return {
        "online": [np.asarray(v) for v in online.weights],
        "target": [np.asarray(v) for v in target.weights],
        "optimizer": [np.asarray(v) for v in optimizer.variables],
    }


def restore_learner_arrays(online, target, optimizer, state: dict[str, list[np.ndarray]]) -> None:
    for name, variables in (("online", online.weights), ("target", target.weights),
                            ("optimizer", optimizer.variables)):
        assign_arrays(name, variables, state[name])
