"""Helpers for the serving tests: servers in-process (a background event loop) or as subprocesses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.server import AgentServer, load_policy

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


OPENSSL = shutil.which("openssl")


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate it signed, and
    a second CA with its own client and server certificates (ones the first CA never signed). EC P-256,
    valid 2 days.

    Keys: ``ca``, ``server.crt``, ``server.key``, ``client.crt``, ``client.key``, ``other-ca``,
    ``other-client.crt``, ``other-client.key``, ``other-server.crt``, ``other-server.key``.
    """
    assert OPENSSL is not None, "openssl is needed to make test certificates"

    def openssl(*args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, cwd=directory, timeout=60)

    def new_key(name: str) -> None:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")

    def new_ca(name: str) -> None:
        new_key(name)
        openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def new_leaf(name: str, ca: str, extensions: str) -> None:
        new_key(name)
        openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(extensions)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")

    new_ca("ca")
    new_ca("other-ca")
    server_extensions = ("subjectAltName=DNS:localhost,DNS:breakout-dqn-serve,IP:127.0.0.1\n"
                         "extendedKeyUsage=serverAuth\n")
    new_leaf("server", "ca", server_extensions)
    new_leaf("other-server", "other-ca", server_extensions)
    new_leaf("client", "ca", "extendedKeyUsage=clientAuth\n")
    new_leaf("other-client", "other-ca", "extendedKeyUsage=clientAuth\n")
    names = ["server.crt", "server.key", "client.crt", "client.key", "other-client.crt", "other-client.key",
             "other-server.crt", "other-server.key"]
    return {"ca": directory / "ca.crt", "other-ca": directory / "other-ca.crt",
            **{name: directory / name for name in names}}


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


ISOLATED = [("grpc.use_local_subchannel_pool", 1)]
"""Channel option: a connection of its own (gRPC channels in one process otherwise share one)."""


class PeakRss:
    """Samples a process's resident memory every ``period_s`` in a thread, keeping the peak (bytes)."""

    def __init__(self, pid: int, period_s: float = 0.05):
        self.pid = pid
        self.period_s = period_s
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def answered_calls(target: str, calls: int = 5, spacing_s: float = 1.0, timeout_s: float = 5.0,
                   metadata: tuple[tuple[str, str], ...] | None = None) -> list[str]:
    """Another client's GetAction calls, one every ``spacing_s`` on a connection of its own: each one's status."""
    import grpc

    from breakout.v1 import agent_pb2, agent_pb2_grpc
    from breakout_dqn import contract

    request = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))
    codes = []
    with grpc.insecure_channel(target, options=ISOLATED) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for index in range(calls):
            if index:
                time.sleep(spacing_s)
            try:
                stub.GetAction(request, timeout=timeout_s, metadata=metadata)
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)  # type: ignore[attr-defined]
    return codes


def metric(running: ServerThread, name: str, labels: dict[str, str], expected: float | None = None,
           timeout: float = 10.0) -> float:
    """A server's metric; with ``expected``, once it reaches that value (a call's client has its status a
    moment before the server has counted it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = running.server.metrics.registry.get_sample_value(name, labels) or 0.0
        if expected is None or value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
