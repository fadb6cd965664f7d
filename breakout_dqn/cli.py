"""``breakout-dqn``: one console script, one subcommand per job, each stage imported lazily.

The serving subcommands (``serve``, ``play``) never import TensorFlow, so they run from the
slim ``serve`` install; ``train``/``evaluate``/``export``/``plot`` need the ``train`` extra.
"""

from __future__ import annotations

import importlib
import sys

from breakout_dqn import __version__
from breakout_dqn.errors import BreakoutDQNError, ExitCode

COMMANDS = {
    "train": ("breakout_dqn.training.cli", "train a DQN on real Breakout (batch job)"),
    "evaluate": ("breakout_dqn.training.evaluate", "score a .keras or .onnx model with the Nature protocol"),
    "plot": ("breakout_dqn.training.plot", "draw a run directory's learning curve as a PNG"),
    "export": ("breakout_dqn.export.cli", "convert model.keras to ONNX behind a parity gate"),
    "verify": ("breakout_dqn.export.verify", "validate an exported ONNX model for CI (exit codes)"),
    "serve": ("breakout_dqn.serving.server", "serve GetAction over gRPC with onnxruntime"),
    "play": ("breakout_dqn.serving.play", "play Breakout through a GetAction server"),
}

# The optional packages, by the extra that installs them: a subcommand run from a smaller install
# (e.g. `train` in the slim serve image) says what to install instead of printing a traceback.
EXTRA_OF = {
    **dict.fromkeys(("tensorflow", "keras", "tf2onnx", "onnx", "tqdm", "tensorboardX", "matplotlib"), "train"),
    **dict.fromkeys(("gymnasium", "ale_py", "imageio", "imageio_ffmpeg"), "game"),
    **dict.fromkeys(("onnxruntime", "grpc", "grpc_health", "grpc_reflection", "google", "prometheus_client"), "serve"),
}


def usage() -> str:
    lines = [f"usage: breakout-dqn {{{','.join(COMMANDS)}}} ...", "", "commands:"]
    lines += [f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'breakout-dqn COMMAND --help' for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"breakout-dqn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"breakout-dqn: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(rest) or 0)
    except BreakoutDQNError as error:  # the one place errors become exit codes (breakout_dqn.errors)
        label = "" if error.exit_code >= 128 else "error: "  # 128 + a signal: a clean stop, not an error
        print(f"breakout-dqn {command}: {label}{error}", file=sys.stderr, flush=True)
        return int(error.exit_code)
    except ModuleNotFoundError as error:
        package = (error.name or "").split(".")[0]
        if package not in EXTRA_OF:
            raise
        extra = EXTRA_OF[package]
        print(f"breakout-dqn {command}: error: needs the Python package {package!r}, which this install lacks; "
              f"install the {extra!r} extra (pip install 'breakout-dqn[{extra}]'), or in a container use the full "
              "image (docker build --target train)", file=sys.stderr)
        return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
