"""The load ``serve_latency.py`` puts on a server: GetAction calls, StreamActions streams, PlayGame sessions.

Each measurement plays one RPC at one concurrency from this process and returns a ``Row``:
a synchronous client at concurrency 1 (what a game loop sees), or ``concurrency`` callers on one
grpc.aio channel. A PlayGame caller sends ``GameLoad.screens`` raw screens per frame (the first
frame of each session opens its game).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract

CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@dataclasses.dataclass
class Row:
    server: str
    rpc: str  # "unary" (GetAction), "stream" (StreamActions) or "game" (PlayGame)
    concurrency: int
    stacks_per_request: int
    requests: int
    actions_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_action: float = float("nan")
    client_cpu_us_per_action: float = float("nan")


@dataclasses.dataclass
class GameLoad:
    """What each PlayGame frame carries: ``screens`` raw screens, RGB or grayscale."""

    screens: int = 2
    rgb: bool = True

    def frames(self) -> tuple[agent_pb2.GameFrame, agent_pb2.GameFrame]:
        """The first frame of a session (new_game) and every later one."""
        shape = (self.screens, contract.SCREEN_HEIGHT, contract.SCREEN_WIDTH, 3)
        pixels = np.random.default_rng(0).integers(0, 256, size=shape if self.rgb else shape[:-1], dtype=np.uint8)
        screen_format = agent_pb2.SCREEN_FORMAT_RGB if self.rgb else agent_pb2.SCREEN_FORMAT_GRAYSCALE
        later = agent_pb2.GameFrame(screens=pixels.tobytes(), format=screen_format, lives=5)
        first = agent_pb2.GameFrame(screens=pixels.tobytes(), format=screen_format, lives=5, new_game=True)
        return first, later

    def describe(self) -> str:
        return f"{self.screens} {'RGB' if self.rgb else 'grayscale'} screens per frame"


def percentiles(latencies: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 99]) if latencies else (float("nan"),) * 2
    return float(p50), float(p99)


def payload(stacks: int) -> bytes:
    rng = np.random.default_rng(stacks)
    return rng.integers(0, 256, size=(stacks, *contract.STACK_SHAPE), dtype=np.uint8).tobytes()


def answered(response: Any) -> int:
    """Actions in a GetActionResponse, or 1 for a GameAction."""
    return 1 if isinstance(response, agent_pb2.GameAction) else len(response.actions)


def measure_sync(server: str, target: str, duration: float, rpc: str = "unary", game: GameLoad | None = None) -> Row:
    """Concurrency 1 with a synchronous client: GetAction calls, or messages on one StreamActions or
    PlayGame stream fed the way ``breakout_dqn.serving.client`` feeds it."""
    request = agent_pb2.GetActionRequest(frames=payload(1))
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        requests: queue.SimpleQueue = queue.SimpleQueue()
        if rpc in ("stream", "game"):
            method = stub.PlayGame if rpc == "game" else stub.StreamActions
            responses = method(iter(requests.get, None), timeout=600)
            if rpc == "game":
                first, request = (game or GameLoad()).frames()
                requests.put(first)
                next(responses)

            def call() -> None:
                requests.put(request)
                next(responses)
        else:

            def call() -> None:
                stub.GetAction(request, timeout=60)

        latencies, elapsed = timed_loop(call, duration)
        if rpc != "unary":
            requests.put(None)
            for _ in responses:
                pass
    return Row(server, rpc, 1, 1, len(latencies), len(latencies) / elapsed, *percentiles(latencies))


def timed_loop(call: Callable[[], None], duration: float) -> tuple[list[float], float]:
    """Warm up, then call for ``duration`` seconds; every call's latency and the time taken (s)."""
    warmup_end = time.perf_counter() + min(1.0, duration / 4)
    while time.perf_counter() < warmup_end:
        call()
    latencies: list[float] = []
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        sent = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - sent)
    return latencies, time.perf_counter() - start


async def measure_async(
    server: str, target: str, concurrency: int, stacks: int, duration: float, rpc: str = "unary",
    game: GameLoad | None = None,
) -> Row:
    """``concurrency`` callers on one grpc.aio channel, each sending ``stacks`` stacks per request
    (GetAction), or each with its own StreamActions or PlayGame stream sending message after message."""
    request: Any = agent_pb2.GetActionRequest(frames=payload(stacks))
    first = None
    if rpc == "game":
        first, request = (game or GameLoad()).frames()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        measuring = False
        stop_at = time.perf_counter() + min(1.0, duration / 4)

        async def caller() -> None:
            stream = {"unary": None, "stream": stub.StreamActions, "game": stub.PlayGame}[rpc]
            call = stream(timeout=600) if stream is not None else None
            if call is not None and first is not None:
                await call.write(first)
                await call.read()
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                if call is None:
                    response = await stub.GetAction(request, timeout=60)
                else:
                    await call.write(request)
                    response = await call.read()
                if measuring:
                    latencies.append(time.perf_counter() - sent)
                assert answered(response) == stacks
            if call is not None:
                await call.done_writing()
                assert await call.read() == grpc.aio.EOF

        await asyncio.gather(*(caller() for _ in range(concurrency)))  # warm-up
        measuring = True
        start = time.perf_counter()
        stop_at = start + duration
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Row(server, rpc, concurrency, stacks, len(latencies), len(latencies) * stacks / elapsed,
               *percentiles(latencies))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_suite(server: str, target: str, pid: int, duration: float, plans: list[tuple[str, int, int]],
              game: GameLoad | None = None) -> list[Row]:
    """The rows ``(rpc, concurrency, stacks per request)`` for one server; CPU per action covers
    warm-up too (an upper bound)."""
    rows = []
    for rpc, concurrency, stacks in plans:
        server_cpu, client_cpu = process_cpu_s(pid), time.process_time()
        if concurrency == 1:
            row = measure_sync(server, target, duration, rpc, game)
        else:
            row = asyncio.run(measure_async(server, target, concurrency, stacks, duration, rpc, game))
        actions = row.actions_per_s * duration * (1 + min(1.0, duration / 4) / duration)  # incl. warm-up
        row.server_cpu_us_per_action = (process_cpu_s(pid) - server_cpu) / actions * 1e6
        row.client_cpu_us_per_action = (time.process_time() - client_cpu) / actions * 1e6
        print(f"  {row.server:<7} {row.rpc:<6} c={row.concurrency:<3} stacks/request={row.stacks_per_request:<3} "
              f"{row.actions_per_s:9.0f} actions/s  p50 {row.p50_ms:8.2f} ms  p99 {row.p99_ms:8.2f} ms  "
              f"CPU/action: server {row.server_cpu_us_per_action:6.0f} us, "
              f"client {row.client_cpu_us_per_action:4.0f} us"
              f"  ({row.requests} requests)", flush=True)
        rows.append(row)
    return rows
