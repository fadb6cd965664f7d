"""Q-value comparison with documented tolerances, shared by the parity gate and ``verify``.

Rule: a candidate matches a reference when every element satisfies
``|q_test - q_ref| <= atol + rtol*|q_ref| + allowance``, all candidate values are finite, and the
greedy action (argmax) agrees on every row except near-ties (see ``compare``). ``allowance`` is 0
unless the caller measured float32 rounding to allow for (the parity gate does). NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Comparison:
    """Q-values of a candidate vs a reference on the same stacks (JSON-ready via ``asdict``)."""

    count: int
    max_abs_dq: float
    mean_abs_dq: float
    max_rel_dq: float
    max_tolerance_ratio: float  # max |dq| / (atol + rtol*|q_ref| + allowance); <= 1 passes
    argmax_agreement: float  # fraction of rows whose argmax agrees
    argmax_disagreements: int
    near_tie_disagreements: int  # disagreements where the two actions' reference values are within tolerance
    finite: bool
    passed: bool
    allowance: float = 0.0  # added to every element's bound (float32 rounding the caller measured)


def compare(q_ref: np.ndarray, q_test: np.ndarray, atol: float, rtol: float,
            allowance: float = 0.0) -> Comparison:
    """Compare float32 ``[N,4]`` Q-values element-wise with ``|dq| <= atol + rtol*|q_ref| + allowance``.

    The argmax must agree on every row except near-ties: rows where the reference prefers its
    action ``a`` over the candidate's ``b`` by at most ``bound[a] + bound[b]`` (two values that
    close may swap order under drift that is itself within tolerance). A candidate that is
    non-finite or of another shape fails.
    """
    q_ref = np.asarray(q_ref, dtype=np.float64)
    q_test = np.asarray(q_test, dtype=np.float64)
    count = len(q_ref)
    if not (allowance >= 0 and math.isfinite(allowance)):
        raise ValueError(f"allowance must be finite and >= 0, got {allowance}")
    if q_test.shape != q_ref.shape or q_ref.ndim != 2 or count == 0:
        nan = float("nan")
        return Comparison(count, nan, nan, nan, nan, 0.0, count, 0, False, False, allowance)
    finite = bool(np.isfinite(q_test).all())
    bound = atol + rtol * np.abs(q_ref) + allowance
    dq = np.abs(q_test - q_ref)
    dq_safe = np.where(np.isfinite(dq), dq, np.inf)
    ref_action = q_ref.argmax(axis=1)
    test_action = np.nan_to_num(q_test, nan=-np.inf).argmax(axis=1)
    rows = np.arange(count)
    disagree = ref_action != test_action
    margin = q_ref[rows, ref_action] - q_ref[rows, test_action]
    near_tie = disagree & (margin <= bound[rows, ref_action] + bound[rows, test_action])
    within = bool((dq_safe <= bound).all())
    return Comparison(
        count=count,
        max_abs_dq=float(dq_safe.max()),
        mean_abs_dq=float(dq_safe.mean()),
        max_rel_dq=float((dq_safe / np.maximum(np.abs(q_ref), 1e-12)).max()),
        max_tolerance_ratio=float((dq_safe / bound).max()),
        argmax_agreement=float(1.0 - disagree.mean()),
        argmax_disagreements=int(disagree.sum()),
        near_tie_disagreements=int(near_tie.sum()),
        finite=finite,
        passed=finite and within and not bool((disagree & ~near_tie).any()),
        allowance=float(allowance),
    )


def jsonable(value: Any) -> Any:
    """NaN/inf floats -> None, recursively (dicts, lists, tuples), so reports are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value
