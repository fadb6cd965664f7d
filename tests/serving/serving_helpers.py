"""Helpers for the serving tests: servers in-process (a background event loop) or as subprocesses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from breakout_dqn.onnx_model import OnnxPolicy
from serving.config import ServerConfig
from serving.server import AgentServer, load_policy

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class SlowPolicy:
    """Wraps a policy; every forward pass sleeps ``delay_s`` first (to hold calls in flight)."""

    def __init__(self, policy: OnnxPolicy, delay_s: float, metadata: dict[str, str] | None = None):
        self.policy = policy
        self.delay_s = delay_s
        self.metadata = policy.metadata if metadata is None else metadata
        self.version = policy.version
        self.batch_sizes: list[int] = []

    def q_values(self, frames: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(frames))
        time.sleep(self.delay_s)
        return self.policy.q_values(frames)


class ServerThread:
    """An AgentServer on its own event loop in a daemon thread; ``target`` is ``127.0.0.1:PORT``."""

    def __init__(
        self, config: ServerConfig, load: Callable[[ServerConfig], Any] = load_policy, *, wait_load: bool = True
    ):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AgentServer(config, load)
        port = self.call(self.server.start())
        self.target = f"127.0.0.1:{port}"
        self.loading = asyncio.run_coroutine_threadsafe(self.server.load(), self.loop)
        if wait_load:
            self.loading.result(timeout=60)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def stats(self):
        assert self.server.servicer.batcher is not None
        return self.server.servicer.batcher.stats

    def stop(self) -> None:
        try:
            self.call(self.server.stop(1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def config_for(model: Path, **overrides: Any) -> ServerConfig:
    return ServerConfig(model=model, port=0, **overrides)


def random_stacks(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 84, 84, 4), dtype=np.uint8)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


class ServerProcess:
    """A server subprocess that logs ``listening on HOST:PORT``; its stderr is collected in a thread."""

    def __init__(self, command: list[str], timeout: float = 60, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env={**subprocess_env(), **(env or {})}, cwd=REPO)
        self.lines: list[str] = []
        self._listening = concurrent.futures.Future[str]()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.target = self._listening.result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            self.process.kill()
            raise AssertionError(f"server did not start: {self.stderr}") from None

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = re.search(r"listening on (\S+:\d+)", line)
            if match and not self._listening.done():
                self._listening.set_result(match.group(1))
        if not self._listening.done():
            self._listening.set_exception(RuntimeError("exited"))

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
