"""``breakout-dqn export MODEL.keras --out MODEL.onnx``: Keras -> ONNX behind a parity gate.

Steps: load the Keras model (safe mode) and check its contract (uint8 ``frames [N,84,84,4]``
channels last -> ``[N,4]``); play real Breakout to collect >= 10,000 frame stacks; store a probe
fingerprint (``export.fingerprint``); convert with tf2onnx (opset 17, explicit input signature,
dynamic batch, output ``q_values`` float32 ``[N,4]``, ``onnx.checker``) with the contract metadata;
write the ONNX to a temp file beside ``--out``; run the parity gate (``export.parity``) with
onnxruntime; rename onto ``--out`` only if every check passed. An existing ``--out`` is replaced
only by a fully successful export.

The gate's JSON report goes to ``--json PATH``; by default beside ``--out``: ``NAME.parity.json`` on
success, ``NAME.parity-failed.json`` on failure (a failed attempt never overwrites the report of
the model that is still in place).

Metadata (ONNX ``metadata_props``, keys in ``breakout_dqn.contract``): preprocessing contract,
action meanings, serve policy, contract version, source sha256, package version, the probe
fingerprint, and when known the training steps/frames and the evaluation score. These are read
from the run directory holding MODEL.keras: ``eval.json`` (``train_agent_steps``, ``mean``) when it
is not older than the model, else the newest ``checkpoints/checkpoint-<step>.npz`` (written with
the model); ``--train-steps``/``--eval-score`` override both.

Exit codes (``breakout_dqn.errors.ExitCode``):
  0  exported: the parity gate passed and --out was written
  1  I/O error while writing --out or the report
  2  usage error; MODEL missing, unreadable or not a Keras model; --out not writable
  3  MODEL breaks the contract (input not uint8 [N,84,84,4] channels last, output not [N,4]),
     or the conversion or the converted graph failed
  4  parity gate failed: report written, nothing written to --out
(An unexpected internal error exits 1 with a Python traceback.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from breakout_dqn import __version__, contract
from breakout_dqn.arguments import ArgumentParser, count
from breakout_dqn.errors import ContractError, ExitCode, GateFailed, OperationFailed, UsageError, one_line
from breakout_dqn.export import parity
from breakout_dqn.export.compare import jsonable
from breakout_dqn.export.convert import OPSET, contract_metadata
from breakout_dqn.files import file_sha256
from breakout_dqn.paths import output_path_error

PROG = "breakout-dqn export"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the trained model.keras")
    parser.add_argument("--out", type=Path, required=True, help="where to write the ONNX model (.onnx)")
    parser.add_argument("--json", "--report", type=Path, dest="json", metavar="PATH",
                        help="the gate's JSON report (default: NAME.parity.json, or NAME.parity-failed.json, "
                        "beside --out)")
    parser.add_argument("--stacks", type=count, default=parity.MIN_REAL_STACKS,
                        help=f"real frame stacks to compare, at least {parity.MIN_REAL_STACKS:,} "
                        f"(default: {parity.MIN_REAL_STACKS:,})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the collection games and the greedy game "
                        "(default: 0)")
    parser.add_argument("--atol", type=float, default=parity.ATOL,
                        help=f"absolute Q tolerance of the gate (default: {parity.ATOL:g})")
    parser.add_argument("--rtol", type=float, default=parity.RTOL,
                        help=f"relative Q tolerance of the gate (default: {parity.RTOL:g})")
    parser.add_argument("--train-steps", type=count,
                        help="training agent steps for the metadata (default: from the run directory)")
    parser.add_argument("--eval-score", type=float, help="evaluation score for the metadata (default: eval.json)")
    for action in parser._actions:  # `--report`, the older name, stays accepted but out of the help
        if action.dest == "json":
            action.option_strings = ["--json"]
    return parser


def default_report_path(out: Path, passed: bool) -> Path:
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(f"{stem}.parity.json" if passed else f"{stem}.parity-failed.json")


def run_metadata(model_path: Path) -> tuple[int | None, float | None, list[str]]:
    """Training steps and eval score from MODEL's run directory, and where each came from.

    Steps: eval.json's ``train_agent_steps`` (written by `train`), else the newest checkpoint's step
    (saved with model.keras, also on SIGTERM), else config.json's ``steps`` (the target, which a
    stopped run may not have reached). The score is used only from an eval.json no older than MODEL.
    """
    from breakout_dqn.training.run_directory import RunDirectory

    run, notes = RunDirectory(model_path.parent), []
    checkpoint_steps, newest = run.newest_checkpoint_step(), run.newest_checkpoint()
    eval_path = run.eval
    if eval_path.is_file():
        if eval_path.stat().st_mtime + 1 < model_path.stat().st_mtime:
            notes.append(f"{eval_path} is older than the model: not used")
        else:
            try:
                data = json.loads(eval_path.read_text())
                steps, score, source = data.get("train_agent_steps"), data.get("mean"), str(eval_path)
                if steps is None and checkpoint_steps is not None:  # e.g. `evaluate --json` of a stopped run
                    steps, source = checkpoint_steps, str(newest)
                elif steps is None:
                    steps = json.loads(run.config.read_text()).get("steps")
                    source = f"{run.config} (the run's target)"
                if isinstance(score, (int, float)) and math.isfinite(score) and isinstance(steps, int):
                    notes.append(f"eval score from {eval_path}, train steps from {source}")
                    return steps, float(score), notes
                notes.append(f"{eval_path} lacks train_agent_steps/mean: not used")
            except (OSError, ValueError, AttributeError) as error:
                notes.append(f"{eval_path} unreadable ({one_line(error)}): not used")
    if checkpoint_steps is not None:
        notes.append(f"train steps from {newest}")
        return checkpoint_steps, None, notes
    return None, None, notes


def check_args(args: argparse.Namespace) -> None:
    """Cheap checks before TensorFlow is imported: the settings, the files exist, --out is writable."""
    model, out = args.model, args.out
    if args.stacks < parity.MIN_REAL_STACKS:
        raise UsageError(f"--stacks must be at least {parity.MIN_REAL_STACKS:,}, got {args.stacks:,}")
    if not (0 <= args.atol < 1 and 0 <= args.rtol < 1):
        raise UsageError("--atol and --rtol must be in [0, 1)")
    if not model.is_file():
        raise UsageError(f"model file not found: {model}")
    if not zipfile.is_zipfile(model):
        raise UsageError(f"cannot load Keras model {model}: not a .keras archive (zip)")
    if out.suffix != ".onnx":
        raise UsageError(f"--out must end in .onnx, got {out}")
    if out.exists() and out.resolve() == model.resolve():
        raise UsageError("--out must differ from MODEL")
    problem = output_path_error("--out", out)  # a directory, or a parent that cannot be made or written
    if problem:
        raise UsageError(problem)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines (absl/oneDNN banners) printed to fd 2 while TensorFlow loads."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_keras(path: Path) -> Any:
    """Load MODEL.keras (safe mode) and check its contract: ModelLoadError (2) or ContractError (3)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401

        from breakout_dqn.training.model import load_q_network
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"export needs Keras' TensorFlow backend, got KERAS_BACKEND={keras.backend.backend()}")
    return load_q_network(path)


def export(args: argparse.Namespace, times: dict[str, float]) -> tuple[bool, dict[str, Any]]:
    """Run the whole export; returns (gate passed, report). Raises a BreakoutDQNError before the gate."""
    from breakout_dqn.export.convert import keras_to_onnx
    from breakout_dqn.export.fingerprint import META_FINGERPRINT, build, pick_real

    clock = time.perf_counter()
    model = load_keras(args.model)
    keras_q = parity.keras_q_function(model)
    steps, score, notes = run_metadata(args.model)
    steps = args.train_steps if args.train_steps is not None else steps
    score = args.eval_score if args.eval_score is not None else score
    metadata = contract_metadata(file_sha256(args.model), train_steps=steps, eval_score=score)
    clock = _lap(times, "load_s", clock)
    stacks = parity.collect_stacks(keras_q, args.stacks, seed=args.seed)
    clock = _lap(times, "collect_s", clock)
    metadata[META_FINGERPRINT] = build(pick_real(stacks), keras_q)
    try:
        proto = keras_to_onnx(model, metadata)
    except Exception as error:  # tf2onnx and onnx.checker raise many types
        raise ContractError(f"conversion failed: {one_line(error)}") from None
    clock = _lap(times, "convert_s", clock)
    report: dict[str, Any] = {
        "source": str(args.model), "source_sha256": metadata[contract.META_SOURCE_SHA256], "out": str(args.out),
        "opset": OPSET, "metadata": {k: v for k, v in metadata.items() if k != META_FINGERPRINT},
        "metadata_sources": notes, "fingerprint_bytes": len(metadata[META_FINGERPRINT]),
    }
    gate = gate_and_write(args, proto, keras_q, parity.exact_q_function(model), stacks, report)
    _lap(times, "gate_s", clock)
    report["gate"] = gate.to_json()
    return gate.passed, report


def gate_and_write(args: argparse.Namespace, proto: Any, keras_q: contract.QFn, exact_q: contract.QFn,
                   stacks: Any, report: dict[str, Any]) -> parity.GateReport:
    """Save the ONNX to a temp file beside --out, run the parity gate on it, and rename it onto --out only
    if the gate passed; a failed gate leaves --out as it was."""
    import onnx

    from breakout_dqn.export.fingerprint import META_FINGERPRINT
    from breakout_dqn.files import atomic_path
    from breakout_dqn.onnx_model import ModelLoadError, OnnxPolicy

    class Refused(Exception):
        """The gate failed: leave the atomic write without renaming."""

    gate: parity.GateReport | None = None
    try:
        with atomic_path(args.out, suffix=".onnx") as temp:
            onnx.save(proto, temp)
            report.update(onnx_sha256=file_sha256(temp), onnx_bytes=temp.stat().st_size)
            try:
                policy = OnnxPolicy(temp)
            except ModelLoadError as error:
                raise ContractError(f"converted model rejected by onnxruntime: {error}") from None
            gate = parity.run_gate(keras_q, policy.q_values, stacks,
                                   fingerprint_value=policy.metadata.get(META_FINGERPRINT),
                                   seed=args.seed, atol=args.atol, rtol=args.rtol, exact_q=exact_q)
            if not gate.passed:
                raise Refused
    except Refused:
        pass
    except OSError as error:
        raise OperationFailed(f"cannot write {args.out}: {error.strerror or error}") from None
    assert gate is not None
    return gate


def _lap(times: dict[str, float], name: str, started: float) -> float:
    now = time.perf_counter()
    times[name] = round(now - started, 3)
    return now


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"breakout_dqn": __version__}
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    with contextlib.suppress(PackageNotFoundError):
        found.setdefault("tensorflow", version("tensorflow-cpu"))
    return found


def summary_lines(report: dict[str, Any]) -> list[str]:
    gate, times = report["gate"], report["timings_s"]
    real, behaviour = gate["real_stacks"], gate["behaviour"]
    edges = ", ".join(f"{name} {'ok' if e['passed'] else 'FAIL'} ({e['max_abs_dq']:.2g}, "
                      f"{e['max_tolerance_ratio']:.2g}x)" for name, e in gate["edge_cases"].items())
    finger = gate["fingerprint"]
    verdict = "identical" if behaviour["identical"] else f"differ at step {behaviour['first_difference_step']}"
    tolerance = f"{gate['tolerance']['atol']:g} + {gate['tolerance']['rtol']:g}*|q|"
    if gate["tolerance"].get("rounding_factor"):
        factor = gate["tolerance"]["rounding_factor"]
        tolerance += f" + {factor:g}x Keras' float32 rounding, here {real['keras_rounding']:.2g}"
    return [
        f"parity: {real['count']:,} real stacks ({real['distinct']:,} distinct): max |dq| {real['max_abs_dq']:.3g}, "
        f"mean |dq| {real['mean_abs_dq']:.3g} (tolerance {tolerance}), "
        f"argmax agreement {100 * real['argmax_agreement']:.3f}% ({real['near_tie_disagreements']} near ties)",
        f"edge cases: {edges}",
        f"fingerprint: {'ok' if finger.get('passed') else 'FAIL'} ({finger.get('count', 0)} probe stacks)",
        f"behaviour: greedy game seed {behaviour['seed']}: "
        f"Keras {behaviour['keras']['steps']} steps score {behaviour['keras']['score']:g}, "
        f"ONNX {behaviour['onnx']['steps']} steps score {behaviour['onnx']['score']:g}: action sequences {verdict}",
        "time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in times.items()),
    ]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    check_args(args)
    times: dict[str, float] = {}
    passed, report = export(args, times)
    times["total_s"] = round(time.perf_counter() - started, 3)
    report.update(passed=passed, timings_s=times, versions=versions(),
                  created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    report_path = args.json or default_report_path(args.out, passed)
    from breakout_dqn.files import atomic_write_text

    try:
        atomic_write_text(report_path, json.dumps(jsonable(report), indent=2) + "\n")
    except OSError as error:
        raise OperationFailed(f"cannot write the report {report_path}: {error.strerror or error}") from None
    print("\n".join(summary_lines(report)))
    if not passed:
        failures = report["gate"]["failures"]
        raise GateFailed(f"parity gate failed ({len(failures)} check(s); first: {failures[0]}); "
                         f"report: {report_path}; nothing written to {args.out}")
    print(f"exported {args.out} ({report['onnx_bytes'] / 1e6:.1f} MB, opset {OPSET}) in {times['total_s']:.1f} s; "
          f"report: {report_path}")
    return ExitCode.OK
