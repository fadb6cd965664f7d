"""``breakout-dqn verify MODEL.onnx``: validate an exported model for CI, with exit codes to gate on.

Checks, in order (onnxruntime, no TensorFlow):
  load         the file exists and onnxruntime can load it
  checker      onnx.checker passes (skipped when the onnx package is not installed)
  io           one input ``frames`` uint8 [N,84,84,4] (channels last), output ``q_values`` float32 [N,4]
  metadata     the required metadata keys are present; contract version, action meanings and serve
               policy match this package's; numeric fields parse
  q_values     batches of 1 and of the probe size give finite float32 [N,4] Q-values
  fingerprint  the Q-values on the probe stored at export reproduce the source Keras model's within
               1e-4 + 1e-4*|q| with the same argmax (breakout_dqn.export.fingerprint): catches weights changed
               after export
  score        with --episodes N and/or --min-score: N full games (Nature protocol: epsilon 0.05,
               no-op starts, 18,000-frame cap, FIRE after lost lives), reported; with --min-score
               their mean must be at least --min-score (N defaults to 10 then). Without either,
               no game is played.

Exit codes (``breakout_dqn.errors.ExitCode``):
  0  every check passed
  2  usage error, or MODEL missing / unreadable / not an ONNX model
  3  contract failure: checker, io, metadata, non-finite Q-values or fingerprint mismatch
  4  the mean score of the games is below --min-score
(An unexpected internal error exits 1 with a Python traceback.)

Reports: text on stdout; ``--json PATH`` also writes the result as JSON (``--json -``, or ``--json``
alone: the JSON on stdout instead of the text).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.arguments import ArgumentParser, count
from breakout_dqn.errors import ContractError, ExitCode, GateFailed, UsageError, one_line
from breakout_dqn.export import fingerprint
from breakout_dqn.export.compare import jsonable
from breakout_dqn.onnx_model import (
    ModelLoadError,
    check_session_contract,
    load_session,
    metadata_problems,
    run_q_values,
    session_metadata,
)
from breakout_dqn.paths import output_path_error

PROG = "breakout-dqn verify"
GAMES_WITH_MIN_SCORE = 10  # games played for --min-score when --episodes is not given
FAILURES = {ExitCode.USAGE: UsageError, ExitCode.CONTRACT: ContractError, ExitCode.GATE: GateFailed}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the exported model.onnx")
    parser.add_argument("--min-score", type=float,
                        help="play the games and fail (exit 4) when their mean is below this (default: no floor)")
    parser.add_argument("--episodes", type=count,
                        help=f"games to play and report (default: none; {GAMES_WITH_MIN_SCORE} with --min-score)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the games' no-op starts and exploration (default: 0)")
    parser.add_argument("--epsilon", type=float, default=atari.NATURE_EPSILON,
                        help=f"random-action rate in the games (default: {atari.NATURE_EPSILON})")
    parser.add_argument("--num-envs", type=count, default=8, help="games played at once (default: 8)")
    parser.add_argument("--max-frames", type=count, default=atari.NATURE_MAX_FRAMES,
                        help=f"frame cap per game (default: {atari.NATURE_MAX_FRAMES})")
    parser.add_argument("--skip-fingerprint", action="store_true",
                        help="accept a model without the export fingerprint (not written by 'breakout-dqn export')")
    parser.add_argument("--json", type=Path, nargs="?", const=Path("-"), metavar="PATH",
                        help="write the result as JSON to PATH; '-' or no PATH: on stdout instead of the text")
    return parser


def check_checker(path: Path) -> Check:
    try:
        import onnx
    except ImportError:
        return Check("checker", True, "skipped: the onnx package is not installed")
    try:
        onnx.checker.check_model(str(path))
        proto = onnx.load(str(path), load_external_data=False)
        opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    except Exception as error:  # onnx raises ValidationError, DecodeError, ...
        return Check("checker", False, f"onnx.checker: {one_line(error)}")
    return Check("checker", True, f"onnx.checker passed; opset {opsets.get('ai.onnx', '?')}")


def check_io(session: Any) -> Check:
    try:
        check_session_contract(session)
    except ModelLoadError as error:
        return Check("io", False, str(error))
    return Check("io", True, "frames uint8 [N,84,84,4] -> q_values float32 [N,4]")


def check_metadata(metadata: dict[str, str]) -> Check:
    problems = metadata_problems(metadata)  # the server's own load-time check, and more
    sha = metadata.get(contract.META_SOURCE_SHA256)
    if sha and not re.fullmatch(r"[0-9a-f]{64}", sha):
        problems.append(f"{contract.META_SOURCE_SHA256} is not a sha256 hex digest")
    numeric = ((contract.META_TRAIN_STEPS, int), (contract.META_TRAIN_FRAMES, int), (contract.META_EVAL_SCORE, float))
    for key, kind in numeric:
        if key in metadata:
            try:
                value = kind(metadata[key])
                if not math.isfinite(value) or value < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{key} is not a non-negative number: {metadata[key]!r}")
    if problems:
        return Check("metadata", False, "; ".join(problems))
    known = [f"{key.split('.')[-1]}={metadata[key]}" for key in (contract.META_TRAIN_STEPS, contract.META_EVAL_SCORE,
                                                              contract.META_VERSION) if key in metadata]
    return Check("metadata", True, f"{contract.CONTRACT_VERSION}; " + ", ".join(known))


def check_q_values(session: Any, probe: np.ndarray) -> Check:
    """Batch 1 and batch len(probe): float32 [N,4], finite, batch-1 rows equal the big batch's."""
    try:
        big = run_q_values(session, probe)
        single = run_q_values(session, probe[:1])
    except Exception as error:  # onnxruntime runtime errors
        return Check("q_values", False, f"inference failed: {one_line(error)}")
    for batch, q in ((len(probe), big), (1, single)):
        if q.dtype != np.float32 or q.shape != (batch, contract.NUM_ACTIONS):
            return Check("q_values", False,
                         f"batch {batch}: got {q.dtype} {list(q.shape)}, expected float32 [{batch},4]")
        if not np.isfinite(q).all():
            return Check("q_values", False, f"batch {batch}: {int((~np.isfinite(q)).sum())} non-finite Q-values")
    top = float(np.abs(big).max())
    return Check("q_values", True, f"finite float32 for batch 1 and {len(probe)}; |q| <= {top:.4g}")


def check_fingerprint(session: Any, value: str | None, skip: bool) -> tuple[Check, dict[str, Any] | None]:
    if value is None and skip:
        return Check("fingerprint", True, "skipped (--skip-fingerprint)"), None
    try:
        result, decoded = fingerprint.check(lambda frames: run_q_values(session, frames), value)
    except fingerprint.FingerprintError as error:
        return Check("fingerprint", False, str(error)), None
    except Exception as error:  # inference failure on the probe
        return Check("fingerprint", False, f"inference failed: {one_line(error)}"), None
    detail = (f"{result.count} probe stacks: max |dq| {result.max_abs_dq:.3g} ({result.max_tolerance_ratio:.3g}x "
              f"the tolerance {decoded.atol:g} + {decoded.rtol:g}*|q|), "
              f"argmax agreement {100 * result.argmax_agreement:.1f}%")
    if not result.passed:
        detail = "Q-values differ from the exported model's (weights changed after export?): " + detail
    return Check("fingerprint", result.passed, detail), asdict(result)


def play(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)

    def act(frames: np.ndarray) -> np.ndarray:
        return np.argmax(run_q_values(session, frames), axis=1)

    started = time.perf_counter()
    results = atari.play_games(atari.epsilon_greedy(act, args.epsilon, rng), args.episodes, seed=args.seed,
                               num_envs=args.num_envs, max_frames_per_episode=args.max_frames)
    summary = atari.summarize(results)
    summary.update(min_score=args.min_score, epsilon=args.epsilon, seed=args.seed,
                   max_frames=args.max_frames, seconds=round(time.perf_counter() - started, 1))
    return summary


def verify(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run the checks; returns (exit code, JSON-ready result)."""
    result: dict[str, Any] = {"model": str(args.model), "checks": []}
    checks: list[Check] = result["checks"]
    try:
        session = load_session(args.model)
    except ModelLoadError as error:
        checks.append(Check("load", False, str(error)))
        return ExitCode.USAGE, result
    checks.append(Check("load", True, f"{args.model} ({args.model.stat().st_size / 1e6:.1f} MB)"))
    metadata = session_metadata(session)
    result["metadata"] = {k: v for k, v in metadata.items() if k != fingerprint.META_FINGERPRINT}
    io = check_io(session)
    checks += [check_checker(args.model), io, check_metadata(metadata)]
    if io.ok:  # inference needs the contract's input
        probe = np.concatenate([fingerprint.noise_stacks(fingerprint.NOISE_SEED, 8), fingerprint.edge_stacks()])
        checks.append(check_q_values(session, probe))
        check, result["fingerprint"] = check_fingerprint(session, metadata.get(fingerprint.META_FINGERPRINT),
                                                         args.skip_fingerprint)
        checks.append(check)
    if not all(check.ok for check in checks):
        return ExitCode.CONTRACT, result
    if args.episodes is not None:
        result["score"] = score = play(session, args)
        passed = args.min_score is None or score["mean"] >= args.min_score
        floor = "no --min-score" if args.min_score is None else \
            f"{'>=' if passed else '<'} --min-score {args.min_score:g}"
        checks.append(Check("score", passed, f"mean {score['mean']:.1f} +- {score['std']:.1f} over "
                                             f"{args.episodes} games ({floor})"))
        if not passed:
            return ExitCode.GATE, result
    return ExitCode.OK, result


def check_args(args: argparse.Namespace) -> None:
    if args.min_score is not None and args.episodes is None:
        args.episodes = GAMES_WITH_MIN_SCORE
    if (args.episodes is not None and args.episodes < 1) or args.num_envs < 1 or args.max_frames < 1:
        raise UsageError("--episodes, --num-envs and --max-frames must be >= 1")
    if not 0.0 <= args.epsilon <= 1.0:
        raise UsageError(f"--epsilon must be in [0, 1], got {args.epsilon}")
    problem = args.json is not None and str(args.json) != "-" and output_path_error("--json", args.json)
    if problem:
        raise UsageError(problem)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    code, result = verify(args)
    checks: list[Check] = result["checks"]
    result.update(ok=code == ExitCode.OK, exit_code=int(code), checks=[asdict(check) for check in checks])
    report = json.dumps(jsonable(result), indent=2, allow_nan=False)
    if args.json is not None and str(args.json) == "-":
        print(report)
    else:
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<11} {check.detail}")
        print(f"{args.model}: {'OK' if code == ExitCode.OK else 'FAILED'} (exit {int(code)})")
        if args.json is not None:
            from breakout_dqn.files import atomic_write_text

            atomic_write_text(args.json, report + "\n")
    failed = [check for check in checks if not check.ok]
    if failed:
        raise FAILURES[ExitCode(code)](f"{failed[0].name}: {failed[0].detail}")
    return ExitCode.OK
