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
