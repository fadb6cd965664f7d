"""Clients across replicas: round_robin over two servers, a drain with no failed call, connection age."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_helpers import ServerThread, config_for, random_stacks

from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving import play
from breakout_dqn.serving.client import ActionStream, AgentClient


def requests_of(running: ServerThread) -> int:
    return running.stats.requests


def streams_of(running: ServerThread) -> int:
    """StreamActions streams open (the round_robin client's health Watch streams left out)."""
    admission = running.server.admission
    return admission.sessions - sum(admission.watches.values())


class Caller(threading.Thread):
    """Calls GetAction (or the stream sessions in turn) in a loop until stopped; keeps every failure."""

    def __init__(self, client: AgentClient, policy: OnnxPolicy, sessions: list[ActionStream] | None = None):
        super().__init__(daemon=True)
        self.client, self.sessions = client, sessions
        self.frames = random_stacks(1, seed=11)
        self.expected = policy.act(self.frames).tolist()
        self.calls = 0
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            caller = self.sessions[self.calls % len(self.sessions)] if self.sessions else self.client
            try:
                actions = caller.get_action(self.frames).tolist()
                if actions != self.expected:
                    self.failures.append(f"call {self.calls}: {actions}")
            except (grpc.RpcError, RuntimeError) as error:
                self.failures.append(f"call {self.calls}: {error}")
            self.calls += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def test_round_robin_spreads_calls_and_a_drain_moves_them_with_no_failed_call(onnx_model_path: Path,
                                                                            policy: OnnxPolicy) -> None:
    """Issue 16, item 3: one client, two replicas; one drains (as on SIGTERM) while the client calls."""
    first, second = (ServerThread(config_for(onnx_model_path)) for _ in range(2))
    target = f"ipv4:{first.target},{second.target}"
    try:
        with AgentClient(target, timeout=10, lb_policy="round_robin") as client:
            client.wait_until_serving(30)
            for _ in range(40):
                client.get_action(random_stacks(1))
            assert requests_of(first) >= 10 and requests_of(second) >= 10  # both receive calls

            sessions = [client.stream() for _ in range(4)]  # round_robin puts some on each replica
            for session in sessions:
                session.get_action(random_stacks(1))
            streams_on_first = streams_of(first)
            assert streams_on_first >= 1
            callers = [Caller(client, policy), Caller(client, policy, sessions)]
            for caller in callers:
                caller.start()
            time.sleep(0.5)
            first.call(first.server.stop(5.0))  # the SIGTERM path: NOT_SERVING, drain, GOAWAY, close
            drained_at = requests_of(first)
            calls_at_drain = [caller.calls for caller in callers]
            time.sleep(1.0)
            for caller in callers:
                caller.stop()
            assert [caller.failures for caller in callers] == [[], []], [c.failures[:2] for c in callers]
            assert all(caller.calls > before + 20 for caller, before in zip(callers, calls_at_drain, strict=True))
            assert requests_of(first) == drained_at  # the traffic moved to the other replica
            # Each stream on the drained replica was reopened (twice, if a reopen landed there before the
            # client saw it NOT_SERVING); every stream now lives on the other one.
            assert sum(session.reopened for session in sessions) >= streams_on_first
            assert streams_of(second) == len(sessions)
            for session in sessions:
                session.close()
    finally:
        for running in (first, second):
            if not running.server.servicer.draining:
                running.stop()
            else:
                running.loop.call_soon_threadsafe(running.loop.stop)


def test_play_balances_over_several_addresses(onnx_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = (ServerThread(config_for(onnx_model_path)) for _ in range(2))
    try:
        target = f"ipv4:{first.target},{second.target}"
        assert play.main(["--server", target, "--lb", "round_robin", "--max-frames", "400"]) == 0
        assert re.search(r"game 1: score \d+ in (\d+) steps", capsys.readouterr().out)
        assert requests_of(first) >= 10 and requests_of(second) >= 10
    finally:
        first.stop()
        second.stop()


def test_a_dns_target_resolves_to_the_server(server: ServerThread, policy: OnnxPolicy) -> None:
    port = server.target.rsplit(":", 1)[1]
    with AgentClient(f"dns:///localhost:{port}", timeout=10, lb_policy="round_robin") as client:
        frames = random_stacks(2, seed=1)
        np.testing.assert_array_equal(client.get_action(frames), policy.act(frames))


def test_connection_age_makes_clients_reconnect_without_a_failed_call(onnx_model_path: Path,
                                                                      policy: OnnxPolicy) -> None:
    running = ServerThread(config_for(onnx_model_path, max_connection_age_s=1.0, max_connection_age_grace_s=0.5))
    peers: set[str] = set()
    admission = running.server.admission
    open_call = admission.open

    def spy(caller) -> None:
        peers.add(caller.peer)
        open_call(caller)

    admission.open = spy  # type: ignore[method-assign]
    try:
        with AgentClient(running.target, timeout=10) as client:
            session = client.stream()  # one stream held for the whole test: cut at age + grace, reopened
            callers = [Caller(client, policy), Caller(client, policy, [session])]
            for caller in callers:
                caller.start()
            time.sleep(4.0)
            for caller in callers:
                caller.stop()
            assert [caller.failures for caller in callers] == [[], []], [c.failures[:2] for c in callers]
            assert min(caller.calls for caller in callers) > 100
            assert len(peers) >= 3  # new connections: each one a new client port
            assert session.reopened >= 1
            session.close()
    finally:
        running.stop()
