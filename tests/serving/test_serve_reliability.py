"""The reliability suite (slow): a flooding client, clients killed or frozen mid-stream, and 10,000
mixed requests over TLS with a token while the server's memory is measured. Each test prints its
figures (README, "Protecting the server"); run with ``-s`` to see them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_helpers import REPO, ServerProcess, ServerThread, config_for, random_stacks, rss_bytes, subprocess_env

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.serving.client import AgentClient
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.security import ClientSecurity

pytestmark = pytest.mark.slow

SERVE = [sys.executable, "-m", "breakout_dqn.cli", "serve", "--port", "0"]
FLOOD_S = 7

# One connection, CALLERS callers each sending GetAction back to back for SECONDS: prints the outcome.
FLOODER = """
import asyncio, collections, json, sys, time
import grpc
from breakout.v1 import agent_pb2, agent_pb2_grpc
target, callers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
request = agent_pb2.GetActionRequest(frames=bytes(84 * 84 * 4))
codes, messages = collections.Counter(), set()

async def main():
    async with grpc.aio.insecure_channel(target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        end = time.monotonic() + seconds
        async def caller():
            while time.monotonic() < end:
                try:
                    await stub.GetAction(request, timeout=10)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    messages.add(error.details())
        print("flooding", flush=True)
        await asyncio.gather(*(caller() for _ in range(callers)))

asyncio.run(main())
print(json.dumps({"codes": codes, "messages": sorted(messages)}), flush=True)
"""

# Opens a stream, has one request answered, says so, then waits (to be killed or frozen).
STREAM_HOLDER = """
import sys, time
import numpy as np
from breakout_dqn.serving.client import AgentClient
session = AgentClient(sys.argv[1], timeout=30).stream()
session.get_action(np.zeros((1, 84, 84, 4), np.uint8))
print("holding", flush=True)
time.sleep(600)
"""


def sequential_latencies_ms(client: AgentClient, seconds: float) -> tuple[np.ndarray, list[str]]:
    """One caller's GetAction latencies (ms) over ``seconds``, and its failures."""
    frames = random_stacks(1, seed=21)
    latencies, failures = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            client.get_action(frames)
            latencies.append(time.perf_counter() - start)
        except grpc.RpcError as error:
            failures.append(f"{error.code().name}: {error.details()}")  # type: ignore[attr-defined]
            time.sleep(0.01)
    return np.asarray(latencies) * 1e3, failures


def flood(onnx_model_path: Path, *flags: str) -> dict:
    """A server with ``flags``; one client calls alone for 2 s, then for 4 s while another floods."""
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), *flags])
    try:
        with AgentClient(server.target, timeout=10) as victim:
            victim.wait_until_serving(60)
            quiet, _ = sequential_latencies_ms(victim, 2.0)
            flooder = subprocess.Popen([sys.executable, "-c", FLOODER, server.target, "256", str(FLOOD_S)], text=True,
                                       stdout=subprocess.PIPE, env=subprocess_env(), cwd=REPO)
            assert flooder.stdout is not None and flooder.stdout.readline().strip() == "flooding"
            time.sleep(1.0)
            flooded, failures = sequential_latencies_ms(victim, 4.0)
            outcome = json.loads(flooder.communicate(timeout=60)[0].strip().splitlines()[-1])
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.wait(30)
        server.kill()
    p99 = float(np.percentile(flooded, 99)) if len(flooded) else float("inf")
    # How many calls the other client waited behind: its median wait x the server's answers per second
    # (what the share bounds, whatever the machine's speed; the machine's load varies between runs).
    calls_ahead = float(np.median(flooded)) / 1e3 * outcome["codes"]["OK"] / FLOOD_S if len(flooded) else 1e9
    print(f"\nflood ({' '.join(flags) or 'defaults'}): one connection with 256 callers: {outcome['codes']}; "
          f"the other client alone p50 {np.median(quiet):.2f} ms p99 {np.percentile(quiet, 99):.2f} ms "
          f"({len(quiet)} calls); during the flood p50 {np.median(flooded):.1f} ms p99 {p99:.1f} ms "
          f"({len(flooded)} answered, {len(failures)} refused), behind ~{calls_ahead:.0f} calls")
    return {"flooded": flooded, "failures": failures, "p99": p99, "calls_ahead": calls_ahead, **outcome}


def test_one_client_flooding_leaves_another_served_with_a_bounded_p99(onnx_model_path: Path) -> None:
    """One connection floods with 256 callers while another client calls one at a time.

    With the default share the flooder holds at most 64 requests in flight (of at most 100 HTTP/2 streams
    on its connection), so the other client's call waits behind at most one share of the flooder's; with
    no share and room for all 256 calls on the connection (the server before) it waits behind all of them.
    """
    shared = flood(onnx_model_path)
    # The server before: no share, and the flooder's connection may open all its 256 calls.
    unshared = flood(onnx_model_path, "--client-share", "1", "--max-streams-per-connection", "264")
    assert shared["failures"] == [], shared["failures"][:3]  # the other client is always served
    assert shared["codes"]["OK"] > 1000
    assert all(message.startswith("per-client limit: this client") for message in shared["messages"])
    assert set(shared["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"}
    assert len(shared["flooded"]) >= 10
    assert shared["p99"] < 1000, "the flood starved the other client"
    share = ServerConfig().max_streams_per_connection  # the flooder's calls the server holds at most
    assert shared["calls_ahead"] < 1.5 * share, shared["calls_ahead"]
    assert unshared["calls_ahead"] > shared["calls_ahead"], "without the share the wait is no longer"


def hold_a_stream(target: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", STREAM_HOLDER, target], text=True, stdout=subprocess.PIPE,
                              env=subprocess_env(), cwd=REPO)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def seconds_until_freed(running: ServerThread, timeout: float = 30) -> float:
    start = time.monotonic()
    while running.server.admission.open_calls:
        assert time.monotonic() - start < timeout, "the slot was never freed"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_client_killed_or_frozen_mid_stream_loses_its_slot_within_the_keepalive_bound(
        onnx_model_path: Path) -> None:
    # Short keepalive; idle timeout and connection age off: only the transport can free the slot.
    keepalive_s, timeout_s = 1.0, 1.0
    running = ServerThread(config_for(onnx_model_path, keepalive_time_s=keepalive_s, keepalive_timeout_s=timeout_s,
                                      stream_idle_timeout_s=0, max_connection_age_s=0))
    try:
        killed = hold_a_stream(running.target)
        assert running.server.admission.sessions == 1
        killed.send_signal(signal.SIGKILL)  # the kernel closes its socket: the server hears of it at once
        killed.wait()
        after_kill = seconds_until_freed(running)

        frozen = hold_a_stream(running.target)
        assert running.server.admission.sessions == 1
        os.kill(frozen.pid, signal.SIGSTOP)  # the socket stays open, nothing answers: only keepalive notices
        try:
            after_freeze = seconds_until_freed(running)
        finally:
            frozen.kill()
            frozen.wait()
        print(f"\nstream slot freed {after_kill:.2f} s after SIGKILL, {after_freeze:.2f} s after SIGSTOP "
              f"(keepalive {keepalive_s:g} s + timeout {timeout_s:g} s)")
        assert after_kill < keepalive_s + timeout_s
        assert after_freeze < 2 * (keepalive_s + timeout_s) + 1.0  # one ping period late at worst, plus slack
        with AgentClient(running.target, timeout=10) as client:
            assert client.get_action(random_stacks(1)).shape == (1,)
    finally:
        running.stop()


async def mixed_load(target: str, security: ClientSecurity, certificates: dict[str, Path],
                     requests: int) -> dict[str, int]:
    """``requests`` good requests (GetAction, some with Q-values, and StreamActions sessions) over TLS with
    the token, and around them failed handshakes, wrong tokens, malformed and oversized requests, cancels."""
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates["ca"].read_bytes())
    metadata = security.metadata
    good = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))
    outcomes: dict[str, int] = {}

    def count(what: str) -> None:
        outcomes[what] = outcomes.get(what, 0) + 1

    async def expect(call, code: grpc.StatusCode) -> None:
        try:
            await call
            count("OK")
        except grpc.aio.AioRpcError as error:
            count(error.code().name)
            assert error.code() == code, error

    channels = [grpc.aio.secure_channel(target, credentials) for _ in range(4)]
    stubs = [agent_pb2_grpc.AgentServiceStub(channel) for channel in channels]
    next_index = iter(range(requests))

    async def caller(worker: int) -> None:
        stub = stubs[worker % len(stubs)]
        for index in next_index:
            if index % 250 == 125:  # a session of 25 stream requests (one index), some cut short
                call = stub.StreamActions(metadata=metadata)
                for step in range(25):
                    await call.write(good)
                    await call.read()
                    if index % 1000 == 125 and step == 10:
                        call.cancel()
                        count("stream cancelled")
                        break
                else:
                    await call.done_writing()
                    count(f"stream {(await call.code()).name}")
                continue
            await expect(stub.GetAction(good, metadata=metadata, timeout=30), grpc.StatusCode.OK)
            if index % 50 == 0:
                await expect(stub.GetAction(agent_pb2.GetActionRequest(frames=b"x" * 100), metadata=metadata,
                                            timeout=30), grpc.StatusCode.INVALID_ARGUMENT)
                await expect(stub.GetAction(good, metadata=(("authorization", "Bearer wrong"),), timeout=30),
                             grpc.StatusCode.UNAUTHENTICATED)
                cancelled = stub.GetAction(good, metadata=metadata, timeout=30)
                cancelled.cancel()
                count("unary cancelled")
            if index % 500 == 0:
                await expect(stub.GetAction(agent_pb2.GetActionRequest(frames=bytes(300 * contract.STACK_BYTES)),
                                            metadata=metadata, timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED)
                async with grpc.aio.insecure_channel(target) as plaintext:  # a failed handshake
                    await expect(agent_pb2_grpc.AgentServiceStub(plaintext).GetAction(
                        good, timeout=5, wait_for_ready=False), grpc.StatusCode.UNAVAILABLE)

    try:
        await asyncio.gather(*(caller(worker) for worker in range(32)))
    finally:
        for channel in channels:
            await channel.close()
    return outcomes


def test_ten_thousand_mixed_requests_leave_the_server_memory_bounded(
        onnx_model_path: Path, certificates: dict[str, Path], tmp_path: Path) -> None:
    token = "reliability-suite-token"
    (tmp_path / "token").write_text(token)
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), "--tls-cert", str(certificates["server.crt"]),
                            "--tls-key", str(certificates["server.key"]), "--auth-token-file", str(tmp_path / "token")])
    security = ClientSecurity(tls=True, ca=certificates["ca"].read_bytes(), token=token)
    try:
        with AgentClient(server.target, timeout=10, security=security) as client:
            client.wait_until_serving(60)
        asyncio.run(mixed_load(server.target, security, certificates, 2_000))  # warm-up: allocator, caches
        before = rss_bytes(server.process.pid)
        start = time.perf_counter()
        outcomes = asyncio.run(mixed_load(server.target, security, certificates, 10_000))
        elapsed = time.perf_counter() - start
        after = rss_bytes(server.process.pid)
        with AgentClient(server.target, timeout=10, security=security) as client:
            assert client.get_action(random_stacks(1)).shape == (1,)
    finally:
        server.process.send_signal(signal.SIGTERM)
        code = server.wait(30)
        server.kill()
    print(f"\n10,000 mixed requests over TLS in {elapsed:.1f} s: {outcomes}; server RSS {before / 2**20:.1f} MiB "
          f"before, {after / 2**20:.1f} MiB after ({(after - before) / 2**20:+.1f} MiB)")
    assert code == 0
    assert outcomes["OK"] == 10_000 - 40  # every good GetAction answered (40 indices were stream sessions)
    assert outcomes["UNAUTHENTICATED"] == outcomes["INVALID_ARGUMENT"] == outcomes["unary cancelled"] == 200
    assert outcomes["UNAVAILABLE"] == outcomes["RESOURCE_EXHAUSTED"] == 20  # failed handshakes, oversized messages
    assert outcomes["stream OK"] == 30 and outcomes["stream cancelled"] == 10
    assert after - before < 16 * 2**20, "the server's memory grew by more than 16 MiB"
    assert token not in server.stderr
