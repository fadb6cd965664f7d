"""``breakout-dqn`` as it runs on a machine without TensorFlow (the GPU machines' JAX install):
``python -m tests.training.without_tensorflow train ...``. Importing tensorflow or tf2onnx fails there."""

from __future__ import annotations

import importlib.abc
import sys

ABSENT = frozenset({"tensorflow", "tf2onnx", "tf_keras"})


class Absent(importlib.abc.MetaPathFinder):
    """Answers every import of an ``ABSENT`` package as pip would leave it: not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, Absent())
    from breakout_dqn.cli import main

    raise SystemExit(main(sys.argv[1:]))
