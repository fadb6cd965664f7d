"""A small synchronous client for ``breakout.v1.AgentService`` (numpy in, numpy out).

    with AgentClient("127.0.0.1:50051") as agent:
        agent.wait_until_serving()
        actions = agent.get_action(frames)           # uint8 [N,84,84,4] or [84,84,4] -> int32 [N]
        actions, q = agent.get_q_values(frames)      # also float32 [N,4]
        info = agent.model_info()                    # GetModelInfoResponse
        with agent.stream() as session:              # StreamActions: one stream for a game
            action = session.get_action(frames)      # same calls, several times cheaper per action
        with agent.game() as game:                   # PlayGame: raw screens in, the action to press out
            action = game.act(screens, lives=5, new_game=True)   # uint8 [n,210,160,3] RGB or [n,210,160] gray
            action = game.act(screens, lives=5)      # the screens rendered while pressing the last action

    AgentClient("dns:///breakout-dqn-serve-headless:50051", lb_policy="round_robin")  # every replica
    AgentClient("server:50051", security=ClientSecurity(tls=True, ca=ca_pem, token=token))

Errors are ``grpc.RpcError`` with the server's status code (see protos/breakout/v1/agent.proto).

Resilience, from the channel's service config (``service_config``): GetAction and GetModelInfo
wait for a connection (up to their deadline) instead of failing while the channel (re)connects,
and are retried with exponential backoff on UNAVAILABLE (a draining replica, a lost connection)
and on CANCELLED from the server (a call a stopping server had received but not started; gRPC
never retries the caller's own cancel): both are pure functions of the request, so a retry cannot
do harm. With ``round_robin`` the channel also watches each address's health service and sends
calls only to those SERVING, so a draining replica (NOT_SERVING) stops getting calls at once. A
StreamActions session that ends the same way (a drain, the server's maximum connection age) is
reopened and its request sent again; a PlayGame session also sends its last 4 frames again first,
so the new stream rebuilds the game's frame stack. The client pings a quiet connection like the server does,
so a stream on a server that vanished fails instead of waiting forever.
"""

from __future__ import annotations

import collections
import json
import queue
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.serving.config import (
    CALL_TIMEOUT_S,
    KEEPALIVE_TIME_S,
    KEEPALIVE_TIMEOUT_S,
    LB_POLICIES,
    LB_POLICY,
    RETRY_ATTEMPTS,
    RETRY_CODES,
    RETRY_INITIAL_BACKOFF_S,
    RETRY_MAX_BACKOFF_S,
    SERVING_WAIT_S,
    message_limit_bytes,
)
from breakout_dqn.serving.healthcheck import SERVICE_NAME
from breakout_dqn.serving.security import ClientSecurity


def service_config(lb_policy: str = LB_POLICY) -> dict[str, Any]:
    """The channel's gRPC service config: load balancing, health checks, waits and retries (module docstring)."""
    if lb_policy not in LB_POLICIES:
        raise ValueError(f"lb_policy must be one of {LB_POLICIES}, not {lb_policy!r}")
    retry = {
        "maxAttempts": RETRY_ATTEMPTS,
        "initialBackoff": f"{RETRY_INITIAL_BACKOFF_S}s",
        "maxBackoff": f"{RETRY_MAX_BACKOFF_S}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRY_CODES),
    }
    unary = [{"service": SERVICE_NAME, "method": method} for method in ("GetAction", "GetModelInfo")]
    config: dict[str, Any] = {
        "loadBalancingConfig": [{lb_policy: {}}],
        "methodConfig": [{"name": unary, "waitForReady": True, "retryPolicy": retry}],
    }
    if lb_policy == "round_robin":  # pick_first has one address in use: nothing to choose between
        config["healthCheckConfig"] = {"serviceName": SERVICE_NAME}
    return config


def channel_options(max_message_bytes: int, lb_policy: str = LB_POLICY) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),  # a request is kept until it cannot be retried
        ("grpc.service_config", json.dumps(service_config(lb_policy))),
        ("grpc.keepalive_time_ms", round(KEEPALIVE_TIME_S * 1000)),  # >= the server's MIN_PING_INTERVAL_S
        ("grpc.keepalive_timeout_ms", round(KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.http2.ping_timeout_ms", round(KEEPALIVE_TIMEOUT_S * 1000)),  # what grpcio 1.85 enforces (server.py)
    ]


def backoff_s(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): none before the first, then doubling from the initial."""
    return 0.0 if attempt <= 1 else min(RETRY_MAX_BACKOFF_S, RETRY_INITIAL_BACKOFF_S * 2 ** (attempt - 2))


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
    """Calls a GetAction server at ``target``; ``timeout`` seconds per call.

    ``target``: ``host:port``, or any gRPC name: ``dns:///name:port`` (every address the name
    resolves to), ``ipv4:10.0.0.1:50051,10.0.0.2:50051``. ``lb_policy``: ``pick_first`` (one
    connection) or ``round_robin`` (a connection to each address, calls spread over the SERVING
    ones). ``security``: TLS and token (default: plaintext, no token).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = CALL_TIMEOUT_S,
        max_message_bytes: int = message_limit_bytes(),
        lb_policy: str = LB_POLICY,
        security: ClientSecurity | None = None,
    ):
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        security = security or ClientSecurity()
        self.channel = security.channel(target, channel_options(max_message_bytes, lb_policy))
        self._metadata = security.metadata
        self._stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def _send(self, request: agent_pb2.GetActionRequest) -> agent_pb2.GetActionResponse:
        return self._stub.GetAction(request, timeout=self.timeout, metadata=self._metadata)

    def stream(self, timeout: float | None = None) -> ActionStream:
        """A StreamActions session (``timeout``: seconds for the whole session, default none)."""
        return ActionStream(self._stub, timeout, self._metadata)

    def game(self, timeout: float | None = None) -> GameStream:
        """A PlayGame session on raw screens (``timeout``: seconds for the whole session, default none)."""
        return GameStream(self._stub, timeout, self._metadata)

    def model_info(self) -> agent_pb2.GetModelInfoResponse:
        """The served model's contract: action meanings, preprocessing, serve policy, metadata."""
        return self._stub.GetModelInfo(agent_pb2.GetModelInfoRequest(), timeout=self.timeout, metadata=self._metadata)

    def health(self, service: str = SERVICE_NAME) -> str:
        """``SERVING``, ``NOT_SERVING``, ... as reported by grpc.health.v1."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout,
                                      metadata=self._metadata)
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


StreamT = TypeVar("StreamT", bound="_Stream")


class _Stream:
    """One bidirectional stream fed in lockstep (a request, then its answer), reopened when the server ends it.

    When the stream ends with UNAVAILABLE or CANCELLED from the server (it drains, stops, or closes
    an old connection), ``_exchange`` opens a new stream, lets the subclass restore its state
    (``_replay``) and sends the request again, up to RETRY_ATTEMPTS times with backoff (``reopened``
    counts them). Any other failure ends the session with the server's status as ``grpc.RpcError``
    (DEADLINE_EXCEEDED when the stream sat idle past the server's ``--stream-idle-timeout``); open a
    new one to go on. ``timeout`` covers the whole session. Not thread-safe: one caller at a time,
    like a game loop.
    """

    _END = object()

    def __init__(self, method: Any, timeout: float | None, metadata: tuple[tuple[str, str], ...] | None = None):
        self._method = method  # a stream-stream stub method
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.reopened = 0
        self._cancelled = False
        self._open()

    def _open(self) -> None:
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        self._responses: Iterator[Any] = self._method(
            iter(self._requests.get, self._END), timeout=timeout, metadata=self._metadata
        )

    def _replay(self) -> None:
        """Bring a reopened stream back to where the old one was (nothing to do for stateless streams)."""

    def _exchange(self, request: Any) -> Any:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                if attempt > 1:
                    self._replay()
                self._requests.put(request)
                return next(self._responses)
            except StopIteration:
                raise RuntimeError("the server closed the stream without an answer") from None
            except grpc.RpcError as error:
                code = error.code().name  # type: ignore[attr-defined]
                if code not in RETRY_CODES or self._cancelled or attempt == RETRY_ATTEMPTS:
                    raise
            self._requests.put(self._END)  # lets gRPC's thread that reads the old requests finish
            time.sleep(backoff_s(attempt))
            self._open()
            self.reopened += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Half-close the stream (the server finishes it) and wait for its end."""
        self._requests.put(self._END)
        for _ in self._responses:  # drains nothing in lockstep use; raises the stream's error if any
            pass

    def cancel(self) -> None:
        self._cancelled = True
        self._responses.cancel()  # type: ignore[attr-defined]

    def __enter__(self: StreamT) -> StreamT:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()


class ActionStream(_ActionCalls, _Stream):
    """A StreamActions session: ``get_action`` / ``get_q_values`` send a request and wait for its answer.

    Reopened (and the request sent again) when the server ends it with UNAVAILABLE or CANCELLED.
    """

    def __init__(self, stub: agent_pb2_grpc.AgentServiceStub, timeout: float | None,
                 metadata: tuple[tuple[str, str], ...] | None = None):
        _Stream.__init__(self, stub.StreamActions, timeout, metadata)

    def _send(self, request: agent_pb2.GetActionRequest) -> agent_pb2.GetActionResponse:
        return self._exchange(request)


REPLAY_FRAMES = contract.STACK_SIZE  # answered frames a reopened PlayGame stream is sent again


def game_frame(screens: np.ndarray, lives: int | None = None, new_game: bool = False) -> agent_pb2.GameFrame:
    """A GameFrame of uint8 screens, RGB ``[n,210,160,3]`` or grayscale ``[n,210,160]`` (or one ``[210,160,...]``)."""
    screens = np.asarray(screens)
    screen = (contract.SCREEN_HEIGHT, contract.SCREEN_WIDTH)
    if screens.dtype != np.uint8:
        raise contract.ContractError(f"screens must be uint8, got {screens.dtype}")
    if screens.shape[-3:] == (*screen, 3) and screens.ndim in (3, 4):
        screen_format = agent_pb2.SCREEN_FORMAT_RGB
    elif screens.shape[-2:] == screen and screens.ndim in (2, 3):
        screen_format = agent_pb2.SCREEN_FORMAT_GRAYSCALE
    else:
        raise contract.ContractError(
            f"screens must be RGB [n,210,160,3] or grayscale [n,210,160] (n = 1 to 4), got {list(screens.shape)}")
    frame = agent_pb2.GameFrame(screens=np.ascontiguousarray(screens).tobytes(), format=screen_format,
                                new_game=new_game)
    if lives is not None:
        frame.lives = lives
    return frame


class GameStream(_Stream):
    """A PlayGame session on raw screens: ``act`` sends what the game rendered, returns the action to press.

    The server preprocesses the screens and applies the serve policy (FIRE on a new game and, when
    ``lives`` is sent, after a lost life): press the action it answers for the next 4 frames. When
    the server ends the stream with UNAVAILABLE or CANCELLED, the session reopens it and sends the
    last REPLAY_FRAMES answered frames again (the first as a new game: its own stack is discarded,
    the next ones rebuild the one the model saw), then the frame in progress: the game goes on
    with the stacks it would have had.
    """

    def __init__(self, stub: agent_pb2_grpc.AgentServiceStub, timeout: float | None,
                 metadata: tuple[tuple[str, str], ...] | None = None):
        self._history: collections.deque[agent_pb2.GameFrame] = collections.deque(maxlen=REPLAY_FRAMES)
        self.model_version = ""
        _Stream.__init__(self, stub.PlayGame, timeout, metadata)

    def step(self, screens: np.ndarray, *, lives: int | None = None, new_game: bool = False,
             return_q_values: bool = False, return_stack: bool = False) -> agent_pb2.GameAction:
        """Send one frame (the screens rendered since the last answer, oldest first); the full GameAction."""
        frame = game_frame(screens, lives, new_game)
        request = agent_pb2.GameFrame()
        request.CopyFrom(frame)
        request.return_q_values, request.return_stack = return_q_values, return_stack
        response = self._exchange(request)
        if new_game:
            self._history.clear()
        self._history.append(frame)
        self.model_version = response.model_version
        return response

    def act(self, screens: np.ndarray, *, lives: int | None = None, new_game: bool = False) -> int:
        """The action to press for the next 4 frames (``step``'s action)."""
        return int(self.step(screens, lives=lives, new_game=new_game).action)

    def _replay(self) -> None:
        for index, frame in enumerate(self._history):
            if index == 0 and not frame.new_game:
                frame = agent_pb2.GameFrame(screens=frame.screens, format=frame.format, new_game=True,
                                            lives=frame.lives if frame.HasField("lives") else None)
            self._requests.put(frame)
            next(self._responses)
