"""``benchmarks/gpu_burst_summary.py``: the burst's figures from its runs' metrics and nvidia-smi's samples."""

from __future__ import annotations

import csv
import datetime
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_burst_summary", ROOT / "benchmarks" / "gpu_burst_summary.py")
assert spec is not None and spec.loader is not None
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)

T0 = 1_800_000_000.0


def write_run(runs: Path, name: str, records: list[tuple[int, float, int, float]]) -> None:
    """``(step, seconds after T0, updates, cpu_seconds)`` per train record, with a game record between."""
    run = runs / name
    run.mkdir(parents=True)
    lines = []
    for step, seconds, updates, cpu_seconds in records:
        lines.append({"type": "game", "step": step, "score": 3.0})
        lines.append({"type": "train", "step": step, "time": T0 + seconds, "updates": updates, "loss": 0.1,
                      "mean_q": 0.5, "recent_score": 2.0, "games": 4, "steps_per_second": 0.0,
                      "cpu_seconds": cpu_seconds, "device": f"jax on {name.split('-')[1]} (x)"})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n{\"type\": \"tra")


def nvidia_smi_row(seconds: float, busy: float, memory: float) -> str:
    stamp = datetime.datetime.fromtimestamp(T0 + seconds).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"{stamp}, {busy:g}, {memory:g}, 80.5"


def test_the_learning_phase_rate_its_gpu_use_and_the_ratio_to_the_cpu_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # DQN on the GPU: 2 windows of warm-up without updates (the first one holds the start-up), then
    # learning from step 8,000 (t=10 s) to 20,000 (t=14 s): 3,000 agent steps/s.
    write_run(runs, "dqn-gpu-jax", [(4000, 8.0, 0, 1.0), (6000, 9.0, 0, 1.0), (8000, 10.0, 10, 1.0),
                                     (14000, 12.0, 1500, 2.0), (20000, 14.0, 3000, 2.0)])
    # The same on the CPU: learning from t=100 s to t=200 s at 50 agent steps/s.
    write_run(runs, "dqn-cpu-jax", [(8000, 100.0, 5, 10.0), (13000, 200.0, 1250, 200.0)])
    write_run(runs, "pqn-cpu-jax", [(0, 5.0, 0, 1.0)])  # never got to learn: no rate, no crash
    samples = tmp_path / "gpu-utilisation.csv"
    rows = [nvidia_smi_row(9.5, 0, 100), nvidia_smi_row(11.0, 40, 900), nvidia_smi_row(13.0, 60, 1000),
            nvidia_smi_row(20.0, 0, 1000), "[N/A], [N/A]"]
    samples.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert summary.main([str(runs), str(out), "--utilisation", str(samples)]) == 0

    report = json.loads((out / "summary.json").read_text())
    by_name = {run["run"]: run for run in report["runs"]}
    gpu, cpu = by_name["dqn-gpu-jax"], by_name["dqn-cpu-jax"]
    assert gpu["learning_steps_per_second"] == pytest.approx(3000.0)
    assert gpu["learning_steps"] == 12000 and gpu["cpu_cores_busy"] == pytest.approx(1.0)
    assert gpu["gpu_utilisation_percent"] == pytest.approx(50.0) and gpu["gpu_memory_mib"] == 1000
    assert gpu["collecting_steps_per_second"] == pytest.approx(2000.0)  # the warm-up, after its first record
    assert cpu["learning_steps_per_second"] == pytest.approx(50.0) and cpu["cpu_cores_busy"] == pytest.approx(2.0)
    assert gpu["vs_cpu"] == pytest.approx(60.0) and gpu["vs_cpu_run"] == "dqn-cpu-jax"
    assert "gpu_utilisation_percent" not in cpu  # no sample fell in its learning phase
    assert by_name["pqn-cpu-jax"]["learning_steps_per_second"] is None
    with open(out / "curves.csv") as handle:
        curves = list(csv.DictReader(handle))
    assert [row["step"] for row in curves if row["run"] == "dqn-gpu-jax"] == ["4000", "6000", "8000", "14000", "20000"]
    assert "| dqn-gpu-jax | jax on gpu (x) | 3000.0 | 60.0 | 2000.0 |" in (out / "summary.md").read_text()
