"""A small synchronous client for ``breakout.v1.AgentService`` (numpy in, numpy out).

    with AgentClient("127.0.0.1:50051") as agent:
        agent.wait_until_serving()
        actions = agent.get_action(frames)           # uint8 [N,84,84,4] or [84,84,4] -> int32 [N]
        actions, q = agent.get_q_values(frames)      # also float32 [N,4]
        info = agent.model_info()                    # GetModelInfoResponse
        with agent.stream() as session:              # StreamActions: one stream for a game
            action = session.get_action(frames)      # same calls, several times cheaper per action

Errors are ``grpc.RpcError`` with the server's status code (see protos/breakout/v1/agent.proto).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from serving.config import CALL_TIMEOUT_S, SERVING_WAIT_S, message_limit_bytes
from serving.healthcheck import SERVICE_NAME


class _ActionCalls:
    """``get_action`` / ``get_q_values`` over one way of sending a GetActionRequest (``_send``)."""

    model_version = ""  # as named by the last response

    def get_action(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions ``int32 [N]`` for uint8 stacks ``[N,84,84,4]`` (or one ``[84,84,4]``)."""
        response = self._call(frames, return_q_values=False)
        return np.asarray(response.actions, dtype=np.int32)

    def get_q_values(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions ``int32 [N]`` and Q-values ``float32 [N,4]``."""
        response = self._call(frames, return_q_values=True)
        q_values = np.asarray(response.q_values, dtype=np.float32).reshape(-1, contract.NUM_ACTIONS)
        return np.asarray(response.actions, dtype=np.int32), q_values

    def _call(self, frames: np.ndarray, return_q_values: bool) -> agent_pb2.GetActionResponse:
        request = agent_pb2.GetActionRequest(frames=contract.frames_to_bytes(frames), return_q_values=return_q_values)
        response = self._send(request)
        self.model_version = response.model_version
        return response

    def _send(self, request: agent_pb2.GetActionRequest) -> agent_pb2.GetActionResponse:
        raise NotImplementedError


class AgentClient(_ActionCalls):
    """Calls a GetAction server at ``target`` (``host:port``); ``timeout`` seconds per call."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = CALL_TIMEOUT_S,
        max_message_bytes: int = message_limit_bytes(),
    ):
        self.target = target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def _send(self, request: agent_pb2.GetActionRequest) -> agent_pb2.GetActionResponse:
        return self._stub.GetAction(request, timeout=self.timeout)

    def stream(self, timeout: float | None = None) -> ActionStream:
        """A StreamActions session (``timeout``: seconds for the whole stream, default none)."""
        return ActionStream(self._stub, timeout)

    def model_info(self) -> agent_pb2.GetModelInfoResponse:
        """The served model's contract: action meanings, preprocessing, serve policy, metadata."""
        return self._stub.GetModelInfo(agent_pb2.GetModelInfoRequest(), timeout=self.timeout)

    def health(self, service: str = SERVICE_NAME) -> str:
        """``SERVING``, ``NOT_SERVING``, ... as reported by grpc.health.v1."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = SERVING_WAIT_S) -> None:
        """Block until the health service reports SERVING; raise TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health()
                if last == "SERVING":
                    return
            except grpc.RpcError as error:
                last = f"{error.code().name}: {error.details()}"
            time.sleep(0.05)
        raise TimeoutError(f"{self.target} is not SERVING after {timeout:.0f} s (last: {last})")

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ActionStream(_ActionCalls):
    """One StreamActions stream: ``get_action`` / ``get_q_values`` send a request and wait for its answer.

    A failed request ends the stream (the server's status arrives as ``grpc.RpcError``); open a
    new one to go on. Not thread-safe: one caller at a time, like a game loop.
    """

    _END = object()

    def __init__(self, stub: agent_pb2_grpc.AgentServiceStub, timeout: float | None):
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._responses: Iterator[agent_pb2.GetActionResponse] = stub.StreamActions(
            iter(self._requests.get, self._END), timeout=timeout
        )

    def _send(self, request: agent_pb2.GetActionRequest) -> agent_pb2.GetActionResponse:
        self._requests.put(request)
        try:
            return next(self._responses)
        except StopIteration:
            raise RuntimeError("the server closed the stream without an answer") from None

    def close(self) -> None:
        """Half-close the stream (the server finishes it) and wait for its end."""
        self._requests.put(self._END)
        for _ in self._responses:  # drains nothing in lockstep use; raises the stream's error if any
            pass

    def cancel(self) -> None:
        self._responses.cancel()  # type: ignore[attr-defined]

    def __enter__(self) -> ActionStream:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()
