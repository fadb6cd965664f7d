"""The run directory (``train --out``): its layout, preparing it, and what it holds.

One owner for the file names that training, metrics, plot, export and ``scripts/ship_reference.sh``
read. For shell scripts: ``python -m breakout_dqn.training.run_directory newest-step RUN`` prints the
newest checkpoint's step; ``newest-checkpoint RUN`` prints its path, then its step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from breakout_dqn.errors import UsageError
from breakout_dqn.training.checkpoint import PATTERN, list_checkpoints


class RunDirectoryError(UsageError):
    """``--out`` cannot be used; the message says why."""


# Settings that may differ between the pieces of one run (``--auto-resume`` ignores them).
PIECE_SETTINGS = frozenset({"out", "resume", "auto_resume", "steps", "progress"})
# How the update is computed, not what it computes (float32 weights on every path): a piece may change
# it, so --auto-resume does not refuse a run saved with another (an older run's float32 against
# today's default auto); the run keeps its saved path unless the piece's flags give one. The backend
# and device too: a checkpoint reads the same on either (docs/guides/gpu.md).
COMPUTE_SETTINGS = frozenset({"precision", "xla", "backend", "device"})


@dataclasses.dataclass(frozen=True)
class RunDirectory:
    """The files of one run. Every path a stage reads or writes is named here."""

    root: Path

    @property
    def model(self) -> Path:  # the online Q-network, float32, rewritten at each checkpoint
        return self.root / "model.keras"

    @property
    def config(self) -> Path:  # the resolved TrainConfig
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:  # one JSON record per line (breakout_dqn.training.metrics)
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:  # checkpoint-<step>.npz (breakout_dqn.training.checkpoint)
        return self.root / "checkpoints"

    @property
    def eval(self) -> Path:  # the final evaluation
        return self.root / "eval.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def replay(self) -> Path:  # the durable replay's memory-mapped arrays and journal
        return self.root / "replay"

    @property
    def curve(self) -> Path:  # `breakout-dqn plot`'s default output
        return self.root / "learning_curve.png"

    @property
    def lock(self) -> Path:  # flock-ed by the `train` process writing the run; holds its pid
        return self.root / "train.lock"

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """This process's hold on the run: a second ``train`` into the same ``--out`` is refused while
        it lasts. The kernel drops the lock when the process dies, even by SIGKILL, so a restarted
        job never finds a stale one."""
        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock, "a+")  # noqa: SIM115  (held for the block, closed below)
        except OSError as error:
            raise RunDirectoryError(f"--out {self.root} is not writable: {error.strerror or error}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise RunDirectoryError(
                    f"--out {self.root} is being written by another `breakout-dqn train` (pid {holder}); "
                    f"wait for it, or stop it (SIGTERM saves a checkpoint) and continue with --resume") from None
            except OSError as error:  # a filesystem without flock (some network mounts): go on unguarded
                print(f"warning: cannot lock {self.lock} ({error.strerror or error}): nothing stops a second "
                      f"`train` from writing this run at the same time", file=sys.stderr, flush=True)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            try:
                yield
            except BaseException:
                if created and [path.name for path in self.root.iterdir()] == [self.lock.name]:
                    self.lock.unlink()  # a run refused before it wrote anything leaves no directory
                    self.root.rmdir()
                raise

    def newest_checkpoint(self) -> Path | None:
        found = list_checkpoints(self.checkpoints)
        return found[-1] if found else None

    def newest_checkpoint_step(self) -> int | None:
        newest = self.newest_checkpoint()
        match = PATTERN.match(newest.name) if newest else None
        return int(match.group(1)) if match else None

    def holds_run(self) -> bool:
        return self.model.exists() or self.newest_checkpoint() is not None

    def saved_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"unreadable {self.config}: {error}") from None

    def prepare(self, resume: bool) -> None:
        """Refuse to clobber an earlier run, or to resume none; run inside ``held()``, which creates the
        directory and proves it writable."""
        if resume and self.newest_checkpoint() is None:
            raise RunDirectoryError(f"--resume: no checkpoint in {self.checkpoints}")
        if not resume and self.holds_run():
            raise RunDirectoryError(f"--out {self.root} already holds a run; use --resume to continue it "
                                    f"or pick another --out")
        if not resume and self.metrics.exists():  # a run stopped before its first checkpoint: start afresh
            kept = self.root / f"metrics.abandoned-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
            self.metrics.rename(kept)
            print(f"{self.root} held the metrics of a run stopped before its first checkpoint: moved to "
                  f"{kept.name}", flush=True)

    def differences(self, settings: dict[str, Any]) -> list[str]:
        """The settings (beyond ``PIECE_SETTINGS`` and ``COMPUTE_SETTINGS``) in which ``settings`` differ
        from this run's config."""
        saved = self.saved_config()
        ignored = PIECE_SETTINGS | COMPUTE_SETTINGS
        return [f"{key}: {saved.get(key)!r} here, {value!r} asked" for key, value in sorted(settings.items())
                if key not in ignored and key in saved and saved[key] != value]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("newest-step", "newest-checkpoint"):
        print("usage: python -m breakout_dqn.training.run_directory newest-step|newest-checkpoint RUN_DIR",
              file=sys.stderr)
        return 2
    run = RunDirectory(Path(argv[1]))
    step, newest = run.newest_checkpoint_step(), run.newest_checkpoint()
    if step is None:
        print(f"no checkpoint in {run.checkpoints}", file=sys.stderr)
        return 1
    print(step if argv[0] == "newest-step" else f"{newest}\n{step}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
