"""Start only the pinned model: the serving Deployment's init container.

Compares the model that ``breakout-dqn serve`` will load (``--model``, default
``$BREAKOUT_DQN_MODEL``) with the pin (``--expect``, default ``$BREAKOUT_DQN_MODEL_VERSION``); the
``breakout-dqn-model`` ConfigMap sets both. The version is the one the server reports in every
``GetActionResponse.model_version``: ``<package version>+<first 12 hex digits of the file's
sha256>``. Exit 0 on a match; exit 1 with both versions on one line otherwise, so the pod never
starts and a rolling update halts with the old replicas still serving. ``--print`` prints the
model's version (the value to pin) and exits 0.

Runs from the slim serve image (onnxruntime, no TensorFlow), mounted from a ConfigMap:
``python check_model_version.py [--model PATH] [--expect VERSION] [--print]``.
"""

from __future__ import annotations

import argparse
import os
import sys

from breakout_dqn.onnx_model import ModelLoadError, OnnxPolicy
from breakout_dqn.serving.config import MODEL_ENV, default_model_path

PIN_ENV = "BREAKOUT_DQN_MODEL_VERSION"
PROG = "check_model_version"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_path()),
                        help=f"the ONNX model (default: ${MODEL_ENV}, as `serve`; now %(default)s)")
    parser.add_argument("--expect", default=os.environ.get(PIN_ENV, ""),
                        help=f"the pinned model_version (default: ${PIN_ENV})")
    parser.add_argument("--print", action="store_true", help="print the model's version and exit")
    args = parser.parse_args(argv)
    try:
        version = OnnxPolicy(args.model, intra_op_threads=1).version
    except ModelLoadError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    if args.print:
        print(version)
        return 0
    if not args.expect:
        print(f"{PROG}: error: no pin: set ${PIN_ENV} or --expect (this model is {version})", file=sys.stderr)
        return 1
    if version != args.expect:
        print(f"{PROG}: error: {args.model} is model_version {version}, but {args.expect} is pinned; "
              f"pin {version} to serve it", file=sys.stderr)
        return 1
    print(f"{args.model}: model_version {version} (pinned)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
