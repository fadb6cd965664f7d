"""The ``breakout.v1.AgentService`` servicer (grpc.aio): requests -> batcher -> responses.

GetAction answers one request per call; StreamActions answers each request of a long-lived
stream in order; PlayGame answers each GameFrame of a game session in order, its stacks built
from raw screens by ``serving/game.py`` (the same batcher for all three, so they batch together).
Admission (``_admit``): at most ``max_concurrent`` calls and open streams in all, and at most a
share of them per client (``serving/limits.py``); a stream idle past ``stream_idle_timeout_s`` ends.

Every failure becomes a gRPC status in one place, ``_status_for``:
INVALID_ARGUMENT (malformed frames or screens), FAILED_PRECONDITION (a game frame before its session
started), RESOURCE_EXHAUSTED (too many requests in flight, past the client's share, too many
stacks), UNAVAILABLE (model loading, server draining), DEADLINE_EXCEEDED (deadline passed before
the forward pass), INTERNAL (anything else; the server keeps serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

import grpc
import numpy as np

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.serving.batcher import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from breakout_dqn.serving.config import (
    CLIENT_KEY,
    CLIENT_SHARE,
    INLINE_GAP_MS,
    MAX_BATCH,
    MAX_CONCURRENT,
    MAX_DELAY_MS,
    MAX_STACKS_PER_REQUEST,
    STREAM_IDLE_TIMEOUT_S,
)
from breakout_dqn.serving.game import GameNotStarted, GameSession, build_stacks
from breakout_dqn.serving.limits import ClientShares, StreamWatch

log = logging.getLogger("breakout_dqn.serve")


class Policy(Protocol):
    """What the servicer needs from a model (``breakout_dqn.onnx_model.OnnxPolicy`` is one)."""

    @property
    def metadata(self) -> dict[str, str]: ...

    @property
    def version(self) -> str: ...

    def q_values(self, frames: np.ndarray) -> np.ndarray: ...


class Unavailable(RuntimeError):
    """No model is loaded yet, or the server is draining."""


class TooManyRequests(RuntimeError):
    """Past the concurrency limit or the per-request stack limit."""


class _EndCall(Exception):
    """End the call with this status: raised to the handler, which answers it (``_finish``).

    Streams end by setting the status and returning, not by ``context.abort``: grpc.aio keeps the
    exception ``abort`` raises on the call's state, and its traceback would hold the handler's
    frames, a PlayGame session among them, for as long as grpc keeps that state.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


@dataclasses.dataclass
class ServiceLimits:
    max_concurrent: int = MAX_CONCURRENT  # GetAction calls + open streams (PlayGame too); RESOURCE_EXHAUSTED past it
    max_stacks_per_request: int = MAX_STACKS_PER_REQUEST  # also sets the server's max message size
    client_share: float = CLIENT_SHARE  # of max_concurrent, per client
    client_key: str = CLIENT_KEY  # "connection" or "address"
    stream_idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S  # 0: off


def _status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from exceptions to gRPC status codes."""
    if isinstance(error, contract.ContractError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, GameNotStarted):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, TooManyRequests | QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, Unavailable | BatcherClosed):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """GetAction and GetModelInfo over a policy that is attached once loaded (``attach``)."""

    def __init__(
        self,
        limits: ServiceLimits | None = None,
        *,
        max_batch: int = MAX_BATCH,
        max_delay_s: float = MAX_DELAY_MS / 1000,
        inline_gap_s: float | None = INLINE_GAP_MS / 1000,
    ):
        self.limits = limits or ServiceLimits()
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.inline_gap_s = inline_gap_s
        self.policy: Policy | None = None
        self.batcher: Batcher | None = None
        self.draining = False
        self.version = ""
        self.in_flight = 0  # GetAction calls and stream messages being answered (what a drain waits for)
        self.unary = 0  # GetAction calls in flight
        self.streams = 0  # open StreamActions and PlayGame streams
        self.games = 0  # open PlayGame streams (game sessions)
        self.rejected = 0  # RESOURCE_EXHAUSTED answers
        self.shares = ClientShares(self.limits.max_concurrent, self.limits.client_share, self.limits.client_key)
        self.watches: set[StreamWatch] = set()  # one per open stream
        self._info: agent_pb2.GetModelInfoResponse | None = None

    def attach(self, policy: Policy) -> None:
        """Start serving ``policy`` (call on the server's event loop)."""
        self.policy = policy
        self.version = policy.version
        self._info = model_info(policy, self.limits.max_stacks_per_request)
        self.batcher = Batcher(
            policy.q_values,
            prepare=build_stacks,
            max_batch=self.max_batch,
            max_delay_s=self.max_delay_s,
            max_queue_stacks=self.limits.max_concurrent * self.limits.max_stacks_per_request,
            inline_gap_s=self.inline_gap_s,
        )
        self.batcher.start()

    def drain(self) -> None:
        """Refuse new calls; end the streams waiting for their next request (UNAVAILABLE: reopen elsewhere).

        A stream answering a request ends right after its answer.
        """
        self.draining = True
        for watch in list(self.watches):
            if not watch.busy:
                watch.end(grpc.StatusCode.UNAVAILABLE, "the server is draining; reopen the stream on another replica")

    async def close(self) -> None:
        """Refuse new calls and finish the queued ones."""
        self.draining = True
        if self.batcher is not None:
            await self.batcher.stop()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no GetAction call is in flight; False if ``timeout`` s passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return not self.in_flight

    async def GetAction(self, request: agent_pb2.GetActionRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            client = self._admit(context)
        except _EndCall as end:
            await context.abort(end.code, end.details)
        self.unary += 1
        self.in_flight += 1
        try:
            return await self._answer(self._get_action(request, context))
        except _EndCall as end:
            await context.abort(end.code, end.details)
        finally:
            self.in_flight -= 1
            self.unary -= 1
            self.shares.give_back(client)

    async def StreamActions(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer(request: agent_pb2.GetActionRequest, index: int) -> agent_pb2.GetActionResponse:
            return await self._answer(self._get_action(request, context), f"request {index} of the stream: ")

        async with contextlib.aclosing(self._stream(request_iterator, context, answer)) as responses:
            async for response in responses:
                yield response

    async def PlayGame(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        session = GameSession()  # freed with this handler: when the stream ends, idles out or is cancelled

        async def answer(frame: agent_pb2.GameFrame, index: int) -> agent_pb2.GameAction:
            return await self._answer(self._play(session, frame, context), f"frame {index} of the game: ")

        async with contextlib.aclosing(self._stream(request_iterator, context, answer, game=True)) as actions:
            async for action in actions:
                yield action

    async def _stream(
        self, request_iterator: Any, context: grpc.aio.ServicerContext,
        answer: Callable[[Any, int], Awaitable[Any]], game: bool = False,
    ) -> AsyncGenerator[Any, None]:
        """Answer a stream's messages in order: one slot for the whole stream, an idle timer, drain handling.

        Every way it ends with an error sets the status and returns (see ``_EndCall``).
        """
        try:
            client = self._admit(context)
        except _EndCall as end:
            _finish(context, end)
            return
        self.streams += 1
        self.games += game
        watch = StreamWatch(self.limits.stream_idle_timeout_s)
        self.watches.add(watch)
        try:
            index = 0
            async for request in request_iterator:
                watch.busy = True
                self.in_flight += 1
                try:
                    response = await answer(request, index)
                finally:
                    self.in_flight -= 1
                    watch.answered()
                yield response
                index += 1
                if self.draining:
                    raise _EndCall(
                        grpc.StatusCode.UNAVAILABLE, "the server is draining; reopen the stream on another replica"
                    )
        except _EndCall as end:
            _finish(context, end)
        except asyncio.CancelledError:
            if watch.ended is None:
                raise  # the client went away: nothing to answer
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()  # our own cancellation, handled here (Python >= 3.11)
            _finish(context, _EndCall(*watch.ended))
        finally:
            watch.close()
            self.watches.discard(watch)
            self.streams -= 1
            self.games -= game
            self.shares.give_back(client)

    def _admit(self, context: grpc.aio.ServicerContext) -> str:
        """Take a slot for this client, or ``_EndCall`` RESOURCE_EXHAUSTED: past ``max_concurrent``, or past its share.

        A stream counts once, whether or not it is answering a request right now. Returns the
        client's key, for ``shares.give_back``.
        """
        calls = self.unary + self.streams
        if calls >= self.limits.max_concurrent:
            self.rejected += 1
            raise _EndCall(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {calls} calls in flight (limit {self.limits.max_concurrent}); retry with backoff",
            )
        client, refused = self.shares.take(context.peer())
        if refused is not None:
            self.rejected += 1
            raise _EndCall(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        return client

    async def _answer(self, work: Awaitable[Any], where: str = "") -> Any:
        """``work``'s response, or ``_EndCall`` with the status ``_status_for`` gives the failure."""
        try:
            return await work
        except asyncio.CancelledError:
            raise  # the client went away or its deadline expired: grpc has already answered
        except Exception as error:
            code, message = _status_for(error)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.rejected += 1
            elif code == grpc.StatusCode.INTERNAL:
                log.exception("request failed")
            raise _EndCall(code, where + message) from None

    def _ready(self, context: grpc.aio.ServicerContext) -> tuple[Batcher, float | None]:
        """The batcher and the call's deadline (loop time), or Unavailable / DeadlineExpired."""
        if self.draining:
            raise Unavailable("the server is draining; retry on another replica")
        if self.batcher is None or self.policy is None:
            raise Unavailable("the model is still loading; wait for the health service to report SERVING")
        remaining = context.time_remaining()
        if remaining is None:
            return self.batcher, None
        if remaining <= 0:
            raise DeadlineExpired("the deadline had expired when the request arrived")
        return self.batcher, asyncio.get_running_loop().time() + remaining

    async def _get_action(
        self, request: agent_pb2.GetActionRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetActionResponse:
        batcher, deadline = self._ready(context)
        frames = contract.frames_from_bytes(request.frames)
        if len(frames) > self.limits.max_stacks_per_request:
            raise TooManyRequests(
                f"{len(frames)} stacks in one request; this server takes at most {self.limits.max_stacks_per_request}"
            )
        q_values = await batcher.submit(frames, deadline)
        response = agent_pb2.GetActionResponse(
            actions=np.argmax(q_values, axis=1).tolist(), model_version=self.version
        )
        if request.return_q_values:
            response.q_values.extend(q_values.ravel().tolist())
        return response

    async def _play(
        self, session: GameSession, frame: agent_pb2.GameFrame, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GameAction:
        """One game frame: checked and the serve policy decided here, its stack built next to the forward pass."""
        batcher, deadline = self._ready(context)
        job, fire = session.accept(frame)
        q_values = (await batcher.submit_job(job, deadline))[0]
        action = contract.FIRE_ACTION if fire else int(np.argmax(q_values))
        response = agent_pb2.GameAction(action=action, serve_policy=fire, model_version=self.version)
        if frame.return_q_values:
            response.q_values.extend(q_values.tolist())
        if frame.return_stack:
            response.stack = session.stack.tobytes()
        return response

    async def GetModelInfo(self, request: agent_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> Any:
        if self._info is None:
            await context.abort(*_status_for(Unavailable("the model is still loading")))
        return self._info


def _finish(context: grpc.aio.ServicerContext, end: _EndCall) -> None:
    """End a stream with ``end``'s status once its handler returns."""
    context.set_code(end.code)
    context.set_details(end.details)


def model_info(policy: Policy, max_stacks_per_request: int) -> agent_pb2.GetModelInfoResponse:
    """The GetModelInfo answer: the contract as this model's metadata declares it."""
    metadata = dict(policy.metadata)
    actions = metadata.get(contract.META_ACTIONS)
    return agent_pb2.GetModelInfoResponse(
        model_version=policy.version,
        action_meanings=actions.split(",") if actions else list(contract.ACTION_MEANINGS),
        preprocessing=metadata.get(contract.META_PREPROCESSING, contract.PREPROCESSING),
        serve_policy=metadata.get(contract.META_SERVE_POLICY, contract.SERVE_POLICY),
        contract_version=metadata.get(contract.META_CONTRACT, contract.CONTRACT_VERSION),
        input=agent_pb2.TensorSpec(name=contract.INPUT_NAME, dtype="uint8", shape=[-1, *contract.STACK_SHAPE]),
        output=agent_pb2.TensorSpec(name=contract.OUTPUT_NAME, dtype="float32", shape=[-1, contract.NUM_ACTIONS]),
        stack_bytes=contract.STACK_BYTES,
        max_stacks_per_request=max_stacks_per_request,
        metadata=metadata,
    )
