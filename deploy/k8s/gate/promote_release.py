"""Release a gated candidate: the gate Job's last step, after ``export`` and ``verify`` passed.

Checks that ``verify``'s JSON report (``--verify-report``) passed for this very candidate with a
floor of at least ``--min-score`` played and met, then copies the candidate to
``RELEASES/<sha256>.onnx`` with its record ``RELEASES/<sha256>.json``. Both names are written once
(a hard link of a finished temp file: never replaced, never half-written); a second run for the
same file finds them and checks the bytes instead. The last line on stdout is the record as one
JSON object: what ``deploy/k8s/promote.sh`` reads to build the serving image and write its pin.

Runs from the full image, mounted from a ConfigMap:
``python promote_release.py --candidate C.onnx --verify-report C.verify.json --min-score N
--releases DIR [--seed N]``. Exit codes as every subcommand's (breakout_dqn.errors.ExitCode):
0 released, 1 I/O failure or a release whose bytes do not match its name, 2 usage (a missing or
unreadable file), 3 the candidate breaks the contract, 4 the report shows a gate not passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from breakout_dqn.errors import BreakoutDQNError, ExitCode, GateFailed, OperationFailed, UsageError
from breakout_dqn.files import file_sha256
from breakout_dqn.onnx_model import ModelLoadError, OnnxPolicy

PROG = "promote_release"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--candidate", type=Path, required=True, help="the exported, verified ONNX model")
    parser.add_argument("--verify-report", type=Path, required=True,
                        help="`breakout-dqn verify --json` output for --candidate")
    parser.add_argument("--min-score", type=float, required=True, help="the floor the report must show was met")
    parser.add_argument("--releases", type=Path, required=True, help="directory of the immutable releases")
    parser.add_argument("--seed", type=int, default=None, help="the training seed, for the record")
    return parser


def passed_report(report_path: Path, candidate: Path, min_score: float) -> dict[str, Any]:
    """The verify report, if it shows every check passed and the floor played on ``candidate``."""
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"--verify-report: unreadable {report_path}: {error}") from None
    if Path(report.get("model", "")) != candidate:
        raise UsageError(f"--verify-report: {report_path} is about {report.get('model')!r}, not {candidate}")
    score = report.get("score") or {}
    if report.get("ok") is not True or report.get("exit_code") != ExitCode.OK:
        raise GateFailed(f"{report_path}: verify did not pass (exit {report.get('exit_code')})")
    floor, mean = score.get("min_score"), score.get("mean")
    if floor is None or mean is None or floor < min_score or mean < min_score:
        raise GateFailed(f"{report_path}: verify played no floor of at least {min_score:g} "
                         f"(its floor {floor}, mean {mean})")
    return report


def write_once(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless it exists: temp file, fsync, hard link (fails if taken)."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o444)  # read-only: a release is never edited
        with contextlib.suppress(FileExistsError):  # released before: the caller checks the bytes
            os.link(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def release(candidate: Path, report: dict[str, Any], releases: Path, min_score: float,
            seed: int | None) -> dict[str, Any]:
    """Copy ``candidate`` to ``releases/<sha256>.onnx`` (+ ``.json`` record); the record."""
    try:
        policy = OnnxPolicy(candidate, intra_op_threads=1)
    except ModelLoadError as error:
        raise BreakoutDQNError(f"--candidate: {error}", ExitCode.CONTRACT) from None
    sha256 = policy.sha256
    record = {"release": f"{sha256}.onnx", "sha256": sha256, "model_version": policy.version, "seed": seed,
              "mean_score": report["score"]["mean"], "episodes": report["score"].get("episodes"),
              "min_score": min_score}
    try:
        releases.mkdir(parents=True, exist_ok=True)
        model = releases / record["release"]
        write_once(candidate, model)
        if file_sha256(model) != sha256:
            raise OperationFailed(f"{model} exists but its sha256 is not its name: refusing to release over it")
        staged = releases / f".{sha256}.record"
        staged.write_text(json.dumps(record, indent=1) + "\n")
        write_once(staged, releases / f"{sha256}.json")  # the first record of a file stays
        staged.unlink()
    except OSError as error:
        raise OperationFailed(f"--releases: {error}") from None
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = passed_report(args.verify_report, args.candidate, args.min_score)
        record = release(args.candidate, report, args.releases, args.min_score, args.seed)
    except BreakoutDQNError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
