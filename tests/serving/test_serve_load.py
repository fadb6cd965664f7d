"""10,000 requests from concurrent clients: no error, every answer right, requests coalesced."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from serving_helpers import ServerThread, random_stacks

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy

pytestmark = pytest.mark.slow  # ~25 s of load on two cores

REQUESTS = 10_000
CONCURRENCY = 48
CHANNELS = 4


async def hammer(target: str, payloads: list[tuple[bytes, list[int]]]) -> list[str]:
    """REQUESTS calls from CONCURRENCY callers over CHANNELS connections; returns the problems seen."""
    problems: list[str] = []
    next_index = iter(range(REQUESTS))
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    stubs = [agent_pb2_grpc.AgentServiceStub(channel) for channel in channels]

    async def caller(worker: int) -> None:
        stub = stubs[worker % CHANNELS]
        for index in next_index:
            frames, expected = payloads[index % len(payloads)]
            try:
                response = await stub.GetAction(agent_pb2.GetActionRequest(frames=frames), timeout=60)
            except grpc.aio.AioRpcError as error:
                problems.append(f"request {index}: {error.code().name}: {error.details()}")
                continue
            if list(response.actions) != expected:
                problems.append(f"request {index}: actions {list(response.actions)} != {expected}")

    try:
        await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(CONCURRENCY))), timeout=240)
    finally:
        for channel in channels:
            await channel.close()
    return problems


def test_ten_thousand_concurrent_requests_without_error(server: ServerThread, policy: OnnxPolicy) -> None:
    payloads = []
    for seed, count in enumerate([1, 1, 2, 1, 3, 1]):  # mostly single stacks, some batch requests
        frames = random_stacks(count, seed=100 + seed)
        payloads.append((contract.frames_to_bytes(frames), policy.act(frames).tolist()))
    before = (server.stats.requests, server.stats.batches)
    start = time.perf_counter()
    problems = asyncio.run(hammer(server.target, payloads))
    elapsed = time.perf_counter() - start
    assert problems == [], problems[:5]
    requests = server.stats.requests - before[0]
    batches = server.stats.batches - before[1]
    assert requests == REQUESTS
    assert batches < REQUESTS / 2, f"{requests} requests in {batches} forward passes: little coalescing"
    print(f"{REQUESTS} requests in {elapsed:.1f} s ({REQUESTS / elapsed:.0f}/s), "
          f"{requests / batches:.1f} requests per forward pass")
