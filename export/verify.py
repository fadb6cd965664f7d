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
  score        with --min-score: N full games (Nature protocol: epsilon 0.05, no-op starts, 18,000
               frame cap, FIRE after lost lives) must average at least --min-score

Exit codes:
  0  every check passed
  2  usage error, or MODEL missing / unreadable / not an ONNX model
  3  contract failure: checker, io, metadata, non-finite Q-values or fingerprint mismatch
  4  the mean score of the games is below --min-score
(An unexpected internal error exits 1 with a Python traceback.)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.export import fingerprint
from breakout_dqn.export.compare import jsonable
from breakout_dqn.onnx_model import (
    ModelLoadError,
    check_metadata_contract,
    check_session_contract,
    load_session,
    run_q_values,
    session_metadata,
)

PROG = "breakout-dqn verify"
EXIT_OK, EXIT_USAGE, EXIT_CONTRACT, EXIT_SCORE = 0, 2, 3, 4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the exported model.onnx")
    parser.add_argument("--min-score", type=float, help="play --episodes games and fail (exit 4) below this mean")
    parser.add_argument("--episodes", type=int, default=10, help="games to play with --min-score")
    parser.add_argument("--seed", type=int, default=0, help="seed of the games' no-op starts and exploration")
    parser.add_argument("--epsilon", type=float, default=atari.NATURE_EPSILON, help="random-action rate in the games")
    parser.add_argument("--num-envs", type=int, default=8, help="games played at once")
    parser.add_argument("--skip-fingerprint", action="store_true",
                        help="accept a model without the export fingerprint (not written by 'breakout-dqn export')")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
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
        return Check("checker", False, f"onnx.checker: {' '.join(str(error).split())[:300]}")
    return Check("checker", True, f"onnx.checker passed; opset {opsets.get('ai.onnx', '?')}")


def check_io(session: Any) -> Check:
    try:
        check_session_contract(session)
    except ModelLoadError as error:
        return Check("io", False, str(error))
    return Check("io", True, "frames uint8 [N,84,84,4] -> q_values float32 [N,4]")


def check_metadata(metadata: dict[str, str]) -> Check:
    problems = [f"missing {key}" for key in contract.REQUIRED_METADATA if not metadata.get(key)]
    expected = {
        contract.META_CONTRACT: contract.CONTRACT_VERSION,
        contract.META_ACTIONS: ",".join(contract.ACTION_MEANINGS),
        contract.META_SERVE_POLICY: contract.SERVE_POLICY,
    }
    problems += [f"{key} is {metadata[key]!r}, expected {value!r}"
                 for key, value in expected.items() if metadata.get(key) and metadata[key] != value]
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
    if not problems:  # never laxer than the server's own load-time check
        try:
            check_metadata_contract(metadata)
        except ModelLoadError as error:
            problems.append(str(error))
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
        return Check("q_values", False, f"inference failed: {' '.join(str(error).split())[:300]}")
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
        return Check("fingerprint", False, f"inference failed: {' '.join(str(error).split())[:300]}"), None
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
                               num_envs=args.num_envs)
    summary = atari.summarize(results)
    summary.update(min_score=args.min_score, epsilon=args.epsilon, seed=args.seed,
                   max_frames=atari.NATURE_MAX_FRAMES, seconds=round(time.perf_counter() - started, 1))
    return summary


def verify(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run the checks; returns (exit code, JSON-ready result)."""
    result: dict[str, Any] = {"model": str(args.model), "checks": []}
    checks: list[Check] = result["checks"]
    try:
        session = load_session(args.model)
    except ModelLoadError as error:
        checks.append(Check("load", False, str(error)))
        return EXIT_USAGE, result
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
        return EXIT_CONTRACT, result
    if args.min_score is not None:
        result["score"] = play(session, args)
        score = result["score"]
        passed = score["mean"] >= args.min_score
        checks.append(Check("score", passed, f"mean {score['mean']:.1f} +- {score['std']:.1f} over {args.episodes} "
                                             f"games ({'>=' if passed else '<'} --min-score {args.min_score:g})"))
        if not passed:
            return EXIT_SCORE, result
    return EXIT_OK, result


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.num_envs < 1 or not 0.0 <= args.epsilon <= 1.0:
        print(f"{PROG}: error: need --episodes >= 1, --num-envs >= 1 and 0 <= --epsilon <= 1", file=sys.stderr)
        return EXIT_USAGE
    code, result = verify(args)
    checks: list[Check] = result["checks"]
    result.update(ok=code == EXIT_OK, exit_code=code, checks=[asdict(check) for check in checks])
    if args.json:
        print(json.dumps(jsonable(result), indent=2, allow_nan=False))
    else:
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<11} {check.detail}")
        print(f"{args.model}: {'OK' if code == EXIT_OK else 'FAILED'} (exit {code})")
    failed = [check for check in checks if not check.ok]
    if failed:
        print(f"{PROG}: error: {failed[0].name}: {failed[0].detail}", file=sys.stderr)
    return code
