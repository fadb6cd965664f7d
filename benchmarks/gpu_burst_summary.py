"""``benchmarks/gpu_burst.sh``'s figures from its trainer runs: agent steps/s, device use, learning curves.

Reads each run directory the burst wrote (``RUNS/<algorithm>-<device>-<backend>/metrics.jsonl``), the
GPU's utilisation samples (``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw
--format=csv,noheader,nounits -lms 500``, if any) and the phase profiles (``phases-*.json``), and writes:

- ``summary.json``: per run, the agent steps/s of its learning phase (from the first ``train`` record
  with updates on, so JAX's compilation and DQN's warm-up without updates stay out), the rate while
  only collecting (DQN's warm-up), the CPU cores busy and the GPU's mean utilisation and memory over
  the learning phase; each GPU run's ratio against the CPU run of the same algorithm; the profiles;
- ``summary.md``: the same as a table;
- ``curves.csv``: every ``train`` record of every run (step, seconds, steps/s, updates, loss, mean Q,
  mean score of the last 100 games): the short learning curves.

Usage: python benchmarks/gpu_burst_summary.py RUNS OUT [--utilisation gpu-utilisation.csv]
       [--phases phases-gpu.json phases-cpu.json] [--versions versions.json]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
from pathlib import Path
from typing import Any

CURVE_FIELDS = ("run", "step", "seconds", "steps_per_second", "updates", "loss", "mean_q", "recent_score", "games")


def read_records(run: Path) -> list[dict[str, Any]]:
    """The ``train`` records of a run, oldest first (a truncated last line is skipped)."""
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "train":
            records.append(record)
    return records


def read_utilisation(path: Path | None) -> list[tuple[float, float, float]]:
    """``(unix time s, GPU utilisation %, memory used MiB)`` per nvidia-smi sample; [] without a file."""
    if path is None or not path.is_file():
        return []
    samples = []
    for row in csv.reader(path.read_text().splitlines()):
        try:
            stamp = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((stamp, float(row[1]), float(row[2])))
        except (ValueError, IndexError):
            continue  # a header, a cut-off last line or "[N/A]"
    return samples


def learning_phase(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first record with updates on and the last record: the learning phase lies between them."""
    learning = [r for r in records if r.get("updates")]
    if len(learning) < 2:
        return None
    return learning[0], learning[-1]


def collecting_rate(records: list[dict[str, Any]]) -> float | None:
    """Agent steps/s while no update ran (DQN's warm-up), from the first record on (start-up left out)."""
    idle = [r for r in records if not r.get("updates")]
    if len(idle) < 2:
        return None
    return round((idle[-1]["step"] - idle[0]["step"]) / (idle[-1]["time"] - idle[0]["time"]), 1)


def summarize_run(name: str, records: list[dict[str, Any]],
                  utilisation: list[tuple[float, float, float]]) -> dict[str, Any]:
    algorithm, device, backend = (name.split("-") + ["", "", ""])[:3]
    summary: dict[str, Any] = {"run": name, "algorithm": algorithm, "device_asked": device, "backend": backend,
                               "device": records[-1].get("device") if records else None,
                               "compute": records[-1].get("compute") if records else None,
                               "last_step": records[-1]["step"] if records else 0,
                               "collecting_steps_per_second": collecting_rate(records)}
    phase = learning_phase(records)
    if phase is None:
        summary["learning_steps_per_second"] = None
        return summary
    first, last = phase
    seconds = last["time"] - first["time"]
    later = [r for r in records if first["time"] < r["time"] <= last["time"]]
    cpu_seconds = sum(r.get("cpu_seconds", 0.0) for r in later)
    summary.update(learning_steps_per_second=round((last["step"] - first["step"]) / seconds, 1),
                   learning_seconds=round(seconds, 1), learning_steps=last["step"] - first["step"],
                   cpu_cores_busy=round(cpu_seconds / seconds, 2),
                   updates=last["updates"], recent_score=None if last.get("recent_score") is None
                   else round(last["recent_score"], 1))
    window = [(busy, memory) for stamp, busy, memory in utilisation if first["time"] <= stamp <= last["time"]]
    if window:
        summary.update(gpu_utilisation_percent=round(statistics.mean(b for b, _ in window), 1),
                       gpu_memory_mib=round(max(m for _, m in window)), gpu_samples=len(window))
    return summary


def add_ratios(runs: list[dict[str, Any]]) -> None:
    """Each GPU run's learning-phase steps/s over its algorithm's CPU run (same backend when there is one)."""
    for run in runs:
        if run["device_asked"] != "gpu" or not run.get("learning_steps_per_second"):
            continue
        cpu = [r for r in runs if r["algorithm"] == run["algorithm"] and r["device_asked"] == "cpu"
               and r.get("learning_steps_per_second")]
        cpu.sort(key=lambda r: r["backend"] != run["backend"])
        if cpu:
            run["vs_cpu"] = round(run["learning_steps_per_second"] / cpu[0]["learning_steps_per_second"], 2)
            run["vs_cpu_run"] = cpu[0]["run"]


def markdown(runs: list[dict[str, Any]], devices: list[str]) -> str:
    lines = ["| run | device | learning agent steps/s | vs CPU | collecting steps/s | CPU cores busy | "
             "GPU util % | GPU memory MiB | steps | last-100 score |", "|" + "---|" * 10]
    for r in runs:
        cells = [r["run"], r.get("device") or "", r.get("learning_steps_per_second"), r.get("vs_cpu"),
                 r.get("collecting_steps_per_second"), r.get("cpu_cores_busy"), r.get("gpu_utilisation_percent"),
                 r.get("gpu_memory_mib"), r.get("last_step"), r.get("recent_score")]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(["# GPU burst", "", *[f"- {d}" for d in devices], "", *lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="the folder holding the burst's run directories")
    parser.add_argument("out", type=Path, help="where summary.json, summary.md and curves.csv go")
    parser.add_argument("--utilisation", type=Path, help="nvidia-smi samples (CSV)")
    parser.add_argument("--phases", type=Path, nargs="*", default=[], help="benchmarks/train_phases.py reports")
    parser.add_argument("--versions", type=Path, help="a JSON of the packages and machine the burst ran on")
    args = parser.parse_args(argv)

    utilisation = read_utilisation(args.utilisation)
    runs, curves = [], []
    for run in sorted(p for p in args.runs.iterdir() if (p / "metrics.jsonl").is_file()):
        records = read_records(run)
        runs.append(summarize_run(run.name, records, utilisation))
        started = records[0]["time"] if records else 0.0
        curves += [{"run": run.name, "seconds": round(r["time"] - started, 1),
                    **{k: r.get(k) for k in CURVE_FIELDS if k not in ("run", "seconds")}} for r in records]
    add_ratios(runs)
    phases = [json.loads(p.read_text()) for p in args.phases if p.is_file()]
    versions = json.loads(args.versions.read_text()) if args.versions and args.versions.is_file() else {}
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"versions": versions, "runs": runs, "phases": phases, "gpu_samples": len(utilisation)}
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    devices = sorted({r["device"] for r in runs if r.get("device")})
    (args.out / "summary.md").write_text(markdown(runs, devices))
    with open(args.out / "curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(curves)
    print(markdown(runs, devices))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
