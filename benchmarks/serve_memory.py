"""Resident memory of `breakout-dqn serve` for several ONNX models, as ratios against the first.

Each model gets its own server process (`breakout-dqn serve --model M`, default settings), started
one after another on the same machine. Its RSS (``VmRSS``) is read once it reports SERVING, and
again after a burst of GetAction requests of 1, 8 and 64 random stacks (``--requests`` of each):
what a replica needs before and after its buffers have grown to the largest batches. What it
answers: how a model change moves a serving replica's memory (the Kubernetes limit, README "Run on
Kubernetes").

Usage: python benchmarks/serve_memory.py BASELINE.onnx OTHER.onnx [...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from breakout_dqn.serving.client import AgentClient  # noqa: E402

BATCHES = (1, 8, 64)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(model: Path, requests: int, serve: list[str]) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([*serve, "serve", "--model", str(model), "--port", str(port), "--log-level", "WARNING"])
    try:
        with AgentClient(f"127.0.0.1:{port}") as client:
            client.wait_until_serving(120)
            serving = rss_mib(server.pid)
            rng = np.random.default_rng(0)
            for batch in BATCHES:
                for _ in range(requests):
                    client.get_action(rng.integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8))
            return {"serving_mib": round(serving, 1), "after_burst_mib": round(rss_mib(server.pid), 1),
                    "model_mb": round(model.stat().st_size / 1e6, 1)}
    finally:
        server.terminate()
        server.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="ONNX models; the first is the baseline")
    parser.add_argument("--requests", type=int, default=20, help="GetAction requests per batch size in the burst")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no such model: {', '.join(missing)}")
    serve = [sys.executable, "-m", "breakout_dqn.cli"]
    figures = [{"model": str(path), **measure(path, args.requests, serve)} for path in args.models]
    base = figures[0]
    for figure in figures:
        serving = figure["serving_mib"] / base["serving_mib"]
        burst = figure["after_burst_mib"] / base["after_burst_mib"]
        figure["x_baseline_serving"], figure["x_baseline_after_burst"] = round(serving, 2), round(burst, 2)
        print(f"{figure['model']} ({figure['model_mb']} MB): RSS {figure['serving_mib']:.1f} MiB serving "
              f"(x{serving:.2f} of the baseline), {figure['after_burst_mib']:.1f} MiB after "
              f"{args.requests} requests each of {', '.join(map(str, BATCHES))} stacks (x{burst:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"baseline": str(args.models[0]), "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
