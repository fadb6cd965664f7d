"""onnxruntime forward pass of several ONNX models, as ratios against the first, in the same run.

Each model is run through the serving side's own ``OnnxPolicy`` on the same random uint8 stacks,
the models taking turns (so a slow minute of the machine hits all of them alike); the median of
``--rounds`` rounds is reported per batch size. What it answers: what a model change (for example
the PQN network's LayerNorm layers) costs the server per forward pass.

Usage: python benchmarks/onnx_forward.py BASELINE.onnx OTHER.onnx [...] [--batches 1 64] [--json OUT]
Pause any training run first (SIGSTOP): the figures are only valid on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from breakout_dqn.onnx_model import OnnxPolicy  # noqa: E402


def seconds_per_pass(policy: OnnxPolicy, stacks: np.ndarray, passes: int) -> float:
    for _ in range(max(2, passes // 10)):  # warm-up
        policy.q_values(stacks)
    started = time.perf_counter()
    for _ in range(passes):
        policy.q_values(stacks)
    return (time.perf_counter() - started) / passes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="ONNX models; the first is the baseline")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="stacks per forward pass")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    policies = {str(path): OnnxPolicy(path) for path in args.models}
    rng = np.random.default_rng(0)
    figures = []
    for batch in args.batches:
        stacks = rng.integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8)
        passes = max(10, 200 // batch)
        times: dict[str, list[float]] = {name: [] for name in policies}
        for _ in range(args.rounds):
            for name, policy in policies.items():
                times[name].append(seconds_per_pass(policy, stacks, passes))
        baseline = float(np.median(times[str(args.models[0])]))
        for name, values in times.items():
            median = float(np.median(values))
            figures.append({"model": name, "batch": batch, "ms_per_pass": round(median * 1e3, 3),
                            "x_baseline": round(median / baseline, 2)})
            print(f"batch {batch:3d}  {median * 1e3:8.3f} ms per pass  x{median / baseline:.2f} of the baseline"
                  f"  {name}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": str(args.models[0]), "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
