"""A session fixture's work done once for all pytest-xdist workers."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from typing import Any

import pytest


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[], Any]) -> Any:
    """``build()`` run by the first pytest-xdist worker that asks; the others wait and reuse its result.

    A session fixture is otherwise built on every worker, and some (a full export) cost a minute each.
    The result must be JSON; it is kept, under a file lock, in the directory the workers' temp
    directories share.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    result = base / f"{name}.json"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            result.write_text(json.dumps(build()))
    return json.loads(result.read_text())
