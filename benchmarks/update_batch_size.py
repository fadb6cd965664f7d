#!/usr/bin/env python3
"""Bigger batches less often, at the same replay ratio: the DQN update's cost per agent step.

    python benchmarks/update_batch_size.py [--batches 32 64 128] [--trainer-steps 30000] [--json OUT]

``default`` samples 32 transitions every 4 agent steps (8 samples per agent step). Batch 64 every 8
steps and 128 every 16 sample the same; on a CPU a batch of 2B costs less than twice a batch of B, so
the update's share of an agent step shrinks. Times the isolated compiled update (this CPU's path for
``default``: ``--precision auto``) for each batch size, interleaved over rounds, and prints the cost
per agent step as a ratio against batch 32 measured in the same run; ``--trainer-steps`` also runs
the whole trainer with each setting and prints its agent steps/s against batch 32's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import cpu_name, isolated_update_seconds, trainer_run  # noqa: E402

BASE_BATCH, BASE_FREQUENCY = 32, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--trainer-steps", type=int, default=0, help="also run the trainer this many agent steps")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    frequency = {batch: BASE_FREQUENCY * batch // BASE_BATCH for batch in args.batches}
    times: dict[int, list[float]] = {batch: [] for batch in args.batches}
    for _ in range(args.rounds):
        for batch in args.batches:
            times[batch].append(isolated_update_seconds("default", repeats=30, batch_size=batch))
    update_ms = {batch: statistics.median(values) * 1000 for batch, values in times.items()}
    per_step = {batch: update_ms[batch] / frequency[batch] for batch in args.batches}
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; `default`'s update on this CPU's path; baseline: batch "
          f"{BASE_BATCH} every {BASE_FREQUENCY} agent steps")
    results = []
    for batch in args.batches:
        row = {"batch_size": batch, "train_frequency": frequency[batch], "update_ms": round(update_ms[batch], 2),
               "update_ms_per_agent_step": round(per_step[batch], 3),
               "cost_per_agent_step_vs_batch32": round(per_step[batch] / per_step[BASE_BATCH], 3)}
        print(f"batch {batch:>4} every {frequency[batch]:>2} steps: {update_ms[batch]:6.2f} ms per update, "
              f"{per_step[batch]:5.2f} ms per agent step, x{row['cost_per_agent_step_vs_batch32']:.2f} batch 32's")
        if args.trainer_steps:
            run = trainer_run("default", args.trainer_steps,
                              ("--batch-size", str(batch), "--train-frequency", str(frequency[batch])))
            row.update(trainer_steps_per_second=run["steps_per_second"], compute=run["compute"])
        results.append(row)
    if args.trainer_steps:
        base = results[0]["trainer_steps_per_second"]
        for row in results:
            row["trainer_speed_vs_batch32"] = round(row["trainer_steps_per_second"] / base, 3)
            print(f"trainer, batch {row['batch_size']:>4}: {row['trainer_steps_per_second']:6.1f} agent steps/s, "
                  f"x{row['trainer_speed_vs_batch32']:.2f} batch 32's ({row['compute']})")
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_name(), "cpus": os.cpu_count(), "baseline": "batch 32 every 4",
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
