"""Run metrics: ``metrics.jsonl`` (one JSON record per line) and TensorBoard scalars."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from breakout_dqn.training.run_directory import RunDirectory


class MetricsLogger:
    """Appends records to ``OUT/metrics.jsonl`` and mirrors numbers to TensorBoard (``OUT/tb``)."""

    def __init__(self, out: Path, hyperparameters: dict[str, Any]):
        from tensorboardX import SummaryWriter  # no TensorFlow needed: works on the JAX backend too

        run = RunDirectory(out)
        self.path = run.metrics
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())
        self._writer = SummaryWriter(str(run.tensorboard))
        self._hyperparameters = hyperparameters
        table = "| setting | value |\n|---|---|\n" + "\n".join(
            f"| {key} | {value} |" for key, value in sorted(hyperparameters.items())
        )
        self._writer.add_text("hyperparameters", table, 0)

    def log(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
        """Write one record of ``kind`` (train, game, eval, ...) at agent step ``step``."""
        record = {"type": kind, "step": step, "frames": step * 4, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{kind}/{key}", value, step)
        return record

    def log_hparams(self, final_metrics: dict[str, float]) -> None:
        scalars = {k: v for k, v in self._hyperparameters.items() if isinstance(v, (int, float, str, bool))}
        self._writer.add_hparams(scalars, {f"hparam/{k}": v for k, v in final_metrics.items()}, name="hparams")

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``; a truncated last line (a killed run) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
