"""How `breakout-dqn serve` holds up against misbehaving clients, on loopback, with its resident memory.

Each scenario runs against a fresh server process (default flags unless named) and reports the
server's RSS before, at its peak and after; the load figures are ratios against the load alone,
measured in the same run on the same machine:

1. load alone: 64 callers on one connection calling GetAction (one stack) back to back;
2. the same load beside 10,000 idle streams (100 connections x 100 StreamActions streams, each
   answered once, then silent; held by a separate process);
3. slow readers: 64 PlayGame streams on one connection sending 4-screen frames, reading nothing;
4. an unauthenticated flood: 64 callers sending 64-stack GetAction requests without the token;
5. undecodable bytes: 64 callers sending the single byte 0xff as a GetActionRequest (log bytes too);
6. clients that vanish mid-stream: processes holding streams, SIGKILLed;
7. SIGTERM under load: every call in flight gets an answer or a status, and the server exits 0.

Bounded: each load phase lasts --seconds (default 8); the whole run takes about 3 minutes.
Usage: python benchmarks/serve_reliability.py [--model M.onnx] [--seconds 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from breakout.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from breakout_dqn import contract  # noqa: E402
from breakout_dqn.serving.client import AgentClient  # noqa: E402

ISOLATED = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
ONE_STACK = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))
BIG = agent_pb2.GetActionRequest(frames=bytes(64 * contract.STACK_BYTES))
NEW_GAME = agent_pb2.GameFrame(screens=bytes(contract.SCREEN_RGB_BYTES), format=agent_pb2.SCREEN_FORMAT_RGB,
                               new_game=True)
FRAME = agent_pb2.GameFrame(screens=bytes(4 * contract.SCREEN_RGB_BYTES), format=agent_pb2.SCREEN_FORMAT_RGB)
TOKEN = "reliability-benchmark-token"
CALLERS = 64
MIB = 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """A `breakout-dqn serve` process on a free loopback port; counts its log bytes and samples its peak RSS."""

    def __init__(self, model: Path, *flags: str, env: dict[str, str] | None = None):
        command = [sys.executable, "-m", "breakout_dqn.cli", "serve", "--model", str(model), "--port", "0", *flags]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.log_bytes = 0
        self.peak_mib = 0.0
        self._listening = threading.Event()
        self.target = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(120):
            self.process.kill()
            raise RuntimeError("the server did not start")
        with AgentClient(self.target) as client:
            client.wait_until_serving(120)
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log_bytes += len(line)
            match = re.search(r"listening on (\S+:\d+)", line)
            if match and not self.target:
                self.target = match.group(1)
                self._listening.set()

    def _sample(self) -> None:
        while self._sampling:
            with contextlib.suppress(RuntimeError, OSError):
                self.peak_mib = max(self.peak_mib, rss_mib(self.process.pid))
            time.sleep(0.05)

    def rss(self) -> float:
        return rss_mib(self.process.pid)

    def reset_peak(self) -> float:
        self.peak_mib = self.rss()
        return self.peak_mib

    def stop(self) -> int:
        self._sampling = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


async def call_loop(target: str, seconds: float, request: Any, metadata: Any = None, method: str = "GetAction",
                    raw: bytes | None = None) -> tuple[list[float], collections.Counter[str]]:
    """CALLERS callers on one connection calling back to back for ``seconds``: latencies (ms) of the answered
    calls and the count of each status."""
    latencies: list[float] = []
    codes: collections.Counter[str] = collections.Counter()
    async with grpc.aio.insecure_channel(target, options=ISOLATED) as channel:
        stub = channel.unary_unary(f"/breakout.v1.AgentService/{method}") if raw is not None else \
            agent_pb2_grpc.AgentServiceStub(channel).GetAction
        payload = raw if raw is not None else request
        end = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < end:
                start = time.perf_counter()
                try:
                    await stub(payload, timeout=10, metadata=metadata)
                    latencies.append((time.perf_counter() - start) * 1e3)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return latencies, codes


def load_figures(latencies: list[float], codes: collections.Counter[str], seconds: float) -> dict[str, Any]:
    answered = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {"p50_ms": round(float(np.percentile(answered, 50)), 2),
            "p99_ms": round(float(np.percentile(answered, 99)), 2),
            "answers_per_s": round(codes["OK"] / seconds, 1), "codes": dict(codes)}


HOLDER = """
import asyncio, sys
import grpc
from breakout.v1 import agent_pb2, agent_pb2_grpc
target, connections, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
request = agent_pb2.GetActionRequest(frames=bytes(84 * 84 * 4))

async def first(call):
    try:
        await call.write(request); await call.read(); return True
    except Exception:
        return False

async def main():
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    opened = 0
    for channel in channels:  # a connection at a time, its streams opened just before their first request
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for start in range(0, per, 50):  # within a connection's --client-share of requests in flight
            calls = [stub.StreamActions() for _ in range(min(50, per - start))]
            opened += sum(await asyncio.gather(*(first(call) for call in calls)))
    print(f"open {opened}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"""


def hold_streams(target: str, connections: int, per_connection: int) -> tuple[subprocess.Popen, int]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, target, str(connections), str(per_connection)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    return holder, int(line.split()[1]) if line.startswith("open ") else 0


def queue_wait_p99_ms(metrics_port: int) -> float:
    """The upper edge of the bucket that holds the 99th percentile of breakout_dqn_queue_wait_seconds."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    buckets = [(float(edge), float(count)) for edge, count in
               re.findall(r'^breakout_dqn_queue_wait_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE)]
    total = buckets[-1][1]
    return next(edge for edge, count in buckets if count >= 0.99 * total) * 1e3


def scenario_idle_streams(model: Path, seconds: float, connections: int, per: int) -> dict[str, Any]:
    metrics_port = _free_port()
    server = Server(model, "--metrics-port", str(metrics_port))
    try:
        asyncio.run(call_loop(server.target, 2.0, ONE_STACK))  # warm-up
        before = server.reset_peak()
        alone = load_figures(*asyncio.run(call_loop(server.target, seconds, ONE_STACK)), seconds)
        alone["queue_wait_p99_ms_at_most"] = queue_wait_p99_ms(metrics_port)
        holder, opened = hold_streams(server.target, connections, per)
        holding = server.rss()
        beside = load_figures(*asyncio.run(call_loop(server.target, seconds, ONE_STACK)), seconds)
        peak = server.peak_mib
        holder.communicate("\n", timeout=60)
        time.sleep(SETTLE_S)
        after = server.rss()
        again = load_figures(*asyncio.run(call_loop(server.target, seconds, ONE_STACK)), seconds)
    finally:
        server.stop()
    # Against the mean of the load alone before and after: the machine's own drift between them cancels out.
    ratio = {key: round(beside[key] / ((alone[key] + again[key]) / 2), 2) for key in ("p50_ms", "p99_ms",
                                                                                     "answers_per_s")}
    return {"load alone": alone, "load beside idle streams": beside, "load alone again": again,
            "idle streams open": opened, "beside / alone": ratio,
            "rss_mib": {"before": round(before), "with streams": round(holding), "peak": round(peak),
                        "after": round(after), "per idle stream_kib": round((holding - before) * 1024 / opened, 1)}}


async def never_reading(target: str, streams: int, seconds: float) -> int:
    async with grpc.aio.insecure_channel(target, options=ISOLATED) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        calls = [stub.PlayGame() for _ in range(streams)]
        sent = 0
        end = time.monotonic() + seconds

        async def send(call: Any) -> None:
            nonlocal sent
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await call.write(NEW_GAME)
                while time.monotonic() < end:
                    await call.write(FRAME)
                    sent += 1

        tasks = [asyncio.ensure_future(send(call)) for call in calls]
        await asyncio.sleep(seconds)
        for call in calls:
            call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent


SETTLE_S = 11.0  # the server hands freed memory back to the kernel every 10 s


def rss_of(server: Server, before: float) -> dict[str, int]:
    """RSS before, at the peak, and once the server has handed freed memory back (SETTLE_S later)."""
    peak = server.peak_mib
    time.sleep(SETTLE_S)
    return {"before": round(before), "peak": round(peak), "after": round(server.rss())}


def scenario_slow_readers(model: Path, seconds: float) -> dict[str, Any]:
    server = Server(model)
    try:
        before = server.reset_peak()
        sent = asyncio.run(never_reading(server.target, 64, seconds))
        figures = {"frames sent": sent, "rss_mib": rss_of(server, before)}
    finally:
        server.stop()
    return figures


def scenario_flood(model: Path, seconds: float, *, raw: bytes | None, flags: tuple[str, ...] = (),
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    server = Server(model, *flags, env=env)
    try:
        before = server.reset_peak()
        log_before = server.log_bytes
        latencies, codes = asyncio.run(call_loop(server.target, seconds, BIG, raw=raw))
        time.sleep(0.5)
        with AgentClient(server.target, timeout=10, security=None) as client:
            served = client.health()
        figures = {"codes": dict(codes), "log_bytes": server.log_bytes - log_before, "health after": served,
                   "rss_mib": rss_of(server, before)}
    finally:
        server.stop()
    return figures


VANISHER = """
import sys, time
import numpy as np
from breakout_dqn.serving.client import AgentClient
clients = [AgentClient(sys.argv[1], timeout=30, max_message_bytes=(8 << 20) + n) for n in range(5)]
sessions = [client.stream() for client in clients for _ in range(20)]
for session in sessions:
    session.get_action(np.zeros((1, 84, 84, 4), np.uint8))
print("holding", flush=True)
time.sleep(600)
"""


def scenario_vanishing(model: Path, processes: int = 10) -> dict[str, Any]:
    server = Server(model, "--metrics-port", str(_free_port()))
    metrics_port = int(server.process.args[server.process.args.index("--metrics-port") + 1])
    try:
        before = server.reset_peak()
        holders = [subprocess.Popen([sys.executable, "-c", VANISHER, server.target], stdout=subprocess.PIPE,
                                    text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
                   for _ in range(processes)]
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        held = _open_streams(metrics_port)
        killed_at = time.monotonic()
        for holder in holders:
            holder.kill()
            holder.wait()
        while _open_streams(metrics_port) > 0 and time.monotonic() - killed_at < 60:
            time.sleep(0.05)
        freed_s = time.monotonic() - killed_at
        figures = {"streams held": held, "open after": _open_streams(metrics_port),
                   "freed within_s": round(freed_s, 2), "rss_mib": rss_of(server, before)}
    finally:
        server.stop()
    return figures


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _open_streams(metrics_port: int) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    match = re.search(r"^breakout_dqn_open_streams (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def stream_until_stopped(target: str) -> tuple[int, str]:
    """A game's StreamActions session through the client library (it reopens a stream the server ends with
    UNAVAILABLE, as a drain does): requests answered, and the status that ended it."""
    answered = 0
    with AgentClient(target, timeout=20) as client:
        session = client.stream(timeout=60)
        frames = np.zeros((1, *contract.STACK_SHAPE), np.uint8)
        try:
            while True:
                session.get_action(frames)
                answered += 1
        except grpc.RpcError as error:
            return answered, error.code().name  # type: ignore[attr-defined]
        except RuntimeError as error:
            return answered, f"RuntimeError: {error}"


async def load_until_stopped(target: str, stop_after_s: float, server: Server) -> collections.Counter[str]:
    """CALLERS callers on GetAction and 16 stream sessions; SIGTERM after ``stop_after_s``; every call's outcome."""
    codes: collections.Counter[str] = collections.Counter()
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target, options=ISOLATED) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stopping = loop.call_later(stop_after_s, server.process.send_signal, signal.SIGTERM)

        async def unary() -> None:
            while True:
                try:
                    await stub.GetAction(ONE_STACK, timeout=20)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    return

        async def stream() -> None:
            answered, ended = await loop.run_in_executor(None, stream_until_stopped, target)
            codes["stream OK"] += answered
            codes[f"stream ended {ended}"] += 1

        await asyncio.wait_for(asyncio.gather(*(unary() for _ in range(CALLERS)), *(stream() for _ in range(16))),
                               timeout=60)
        stopping.cancel()
    return codes


def scenario_sigterm(model: Path, seconds: float) -> dict[str, Any]:
    server = Server(model)
    before = server.reset_peak()
    started = time.monotonic()
    try:
        codes = asyncio.run(load_until_stopped(server.target, seconds, server))
        outcome = "every call answered or given a status"
    except asyncio.TimeoutError:
        codes, outcome = collections.Counter(), "a call was left without a status (timed out)"
    code = server.process.wait(60)
    return {"codes": dict(codes), "outcome": outcome, "exit code": code,
            "exited after SIGTERM_s": round(time.monotonic() - started - seconds, 2),
            "rss_mib": {"before": round(before), "peak": round(server.peak_mib)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "breakout-dqn.onnx")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of each load phase")
    parser.add_argument("--connections", type=int, default=100, help="connections holding idle streams")
    parser.add_argument("--streams-per-connection", type=int, default=100)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    seconds = args.seconds
    results = {
        "idle streams": scenario_idle_streams(args.model, seconds, args.connections, args.streams_per_connection),
        "slow readers (64 PlayGame streams that never read)": scenario_slow_readers(args.model, seconds),
        "unauthenticated flood (64 callers, 64-stack requests)": scenario_flood(
            args.model, seconds, raw=None, env={"BREAKOUT_DQN_AUTH_TOKEN": TOKEN}),
        "undecodable bytes (64 callers, one byte 0xff)": scenario_flood(args.model, seconds, raw=b"\xff"),
        "clients that vanish mid-stream (10 processes x 100 streams, SIGKILL)": scenario_vanishing(args.model),
        "SIGTERM under load (64 callers + 16 streams)": scenario_sigterm(args.model, seconds / 2),
    }
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
