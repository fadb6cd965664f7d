"""The ``breakout.v1.AgentService`` servicer (grpc.aio): requests -> batcher -> responses.

GetAction answers one request per call; StreamActions answers each request of a long-lived
stream in order; PlayGame answers each GameFrame of a game session in order, its stacks built
from raw screens by ``serving/game.py`` (the same batcher for all three, so they batch together).
Calls reach it through ``serving/gate.py``, which has identified and admitted them (and decoded
their messages); here each request takes a work slot (``Admission.working``: the in-flight budget,
the client's share, load shedding) for as long as it is being answered.

Every failure becomes a gRPC status in one place, ``_status_for``:
INVALID_ARGUMENT (malformed frames or screens), FAILED_PRECONDITION (a game frame before its session
started), RESOURCE_EXHAUSTED (past a budget or the client's share, too many stacks), UNAVAILABLE
(model loading, server draining), DEADLINE_EXCEEDED (deadline passed before the forward pass),
INTERNAL (anything else; the server keeps serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

import grpc
import numpy as np

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.serving.admission import Admission, Caller, Refused
from breakout_dqn.serving.batcher import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.game import GameNotStarted, GameSession, build_stacks
from breakout_dqn.serving.gate import current_caller
from breakout_dqn.serving.limits import StreamWatch
from breakout_dqn.serving.metrics import ServingMetrics

log = logging.getLogger("breakout_dqn.serve")

# What GetModelInfo returns of the model's metadata: what a client needs to drive the game and name the
# model. The parity fingerprint (~11 KB) stays in the file, where `verify` reads it.
CLIENT_METADATA = (contract.META_PREPROCESSING, contract.META_ACTIONS, contract.META_SERVE_POLICY,
                   contract.META_CONTRACT, contract.META_VERSION, contract.META_SOURCE_SHA256,
                   contract.META_TRAIN_STEPS, contract.META_TRAIN_FRAMES, contract.META_EVAL_SCORE)
DRAINING = "the server is draining; reopen the stream on another replica"


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


def _status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from exceptions to gRPC status codes."""
    if isinstance(error, Refused):
        return error.code, error.message
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
    """GetAction, StreamActions, PlayGame and GetModelInfo over a policy attached once loaded (``attach``)."""

    def __init__(self, config: ServerConfig, admission: Admission, metrics: ServingMetrics | None = None):
        self.config = config
        self.admission = admission
        self.metrics = metrics
        self.policy: Policy | None = None
        self.batcher: Batcher | None = None
        self.draining = False
        self.version = ""
        self.watches: set[StreamWatch] = set()  # one per open call (the gate adds them)
        self._info: agent_pb2.GetModelInfoResponse | None = None

    @property
    def in_flight(self) -> int:
        """Requests being answered or queued (what a drain waits for)."""
        return self.admission.in_flight

    def attach(self, policy: Policy) -> None:
        """Start serving ``policy`` (call on the server's event loop)."""
        config = self.config
        self.policy = policy
        self.version = policy.version
        self._info = model_info(policy, config.max_stacks_per_request)
        self.batcher = Batcher(
            policy.q_values,
            prepare=build_stacks,
            max_batch=config.max_batch,
            max_delay_s=config.max_delay_ms / 1000,
            max_queue_stacks=config.max_in_flight * config.max_stacks_per_request,
            inline_gap_s=config.inline_gap_s,
            on_pass=self.metrics.forward_pass if self.metrics is not None else None,
            others_in_flight=lambda: self.admission.in_flight > 1,
        )
        self.admission.expected_wait_s = self.batcher.expected_wait_s
        self.batcher.start()

    def drain(self) -> None:
        """Refuse new calls; end the streams waiting for their next request (UNAVAILABLE: reopen elsewhere).

        A stream answering a request ends right after its answer.
        """
        self.draining = True
        for watch in list(self.watches):
            if not watch.busy:
                watch.end(grpc.StatusCode.UNAVAILABLE, DRAINING)

    async def close(self) -> None:
        """Refuse new calls and finish the queued ones."""
        self.draining = True
        if self.batcher is not None:
            await self.batcher.stop()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` s passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return not self.in_flight

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The call's caller, as the gate admitted it (anonymous when called without the gate)."""
        caller = current_caller.get()
        return caller if caller is not None else self.admission.caller("", context.peer(), None)

    async def GetAction(self, request: agent_pb2.GetActionRequest, context: grpc.aio.ServicerContext) -> Any:
        caller = self._caller(context)
        try:
            self._take_work(caller, _stacks_in(request))
            try:
                return await self._answer(self._get_action(request, context))
            finally:
                self.admission.give_back_work(caller)
        except _EndCall as end:
            await context.abort(end.code, end.details)

    async def StreamActions(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer(request: agent_pb2.GetActionRequest, index: int) -> agent_pb2.GetActionResponse:
            return await self._answer(self._get_action(request, context), f"request {index} of the stream: ")

        async with contextlib.aclosing(self._stream(request_iterator, context, answer, _stacks_in)) as responses:
            async for response in responses:
                yield response

    async def PlayGame(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        session = GameSession()  # freed with this handler: when the stream ends, idles out or is cancelled

        async def answer(frame: agent_pb2.GameFrame, index: int) -> agent_pb2.GameAction:
            return await self._answer(self._play(session, frame, context), f"frame {index} of the game: ")

        async with contextlib.aclosing(self._stream(request_iterator, context, answer, lambda frame: 1)) as actions:
            async for action in actions:
                yield action

    async def _stream(
        self, request_iterator: Any, context: grpc.aio.ServicerContext,
        answer: Callable[[Any, int], Awaitable[Any]], stacks_of: Callable[[Any], int],
    ) -> AsyncGenerator[Any, None]:
        """Answer a stream's messages in order, each holding a work slot while it is answered.

        Every way it ends with an error sets the status and returns (see ``_EndCall``).
        """
        caller = self._caller(context)
        try:
            index = 0
            async for request in request_iterator:
                self._take_work(caller, stacks_of(request), f"message {index} of the stream: ")
                try:
                    response = await answer(request, index)
                finally:
                    self.admission.give_back_work(caller)
                yield response
                index += 1
                if self.draining:
                    raise _EndCall(grpc.StatusCode.UNAVAILABLE, DRAINING)
        except _EndCall as end:
            _finish(context, end)

    def _take_work(self, caller: Caller, stacks: int, where: str = "") -> None:
        """A work slot for one request (give it back with ``admission.give_back_work``), or ``_EndCall``
        RESOURCE_EXHAUSTED, the refusal's reason kept on the caller for the metrics."""
        try:
            self.admission.take_work(caller, stacks)
        except Refused as refusal:
            caller.reason = refusal.reason
            raise _EndCall(refusal.code, where + refusal.message) from None

    async def _answer(self, work: Awaitable[Any], where: str = "") -> Any:
        """``work``'s response, or ``_EndCall`` with the status ``_status_for`` gives the failure."""
        try:
            return await work
        except asyncio.CancelledError:
            raise  # the client went away or its deadline expired: grpc has already answered
        except Exception as error:
            code, message = _status_for(error)
            if code == grpc.StatusCode.INTERNAL:
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
        if len(frames) > self.config.max_stacks_per_request:
            raise TooManyRequests(
                f"{len(frames)} stacks in one request; this server takes at most {self.config.max_stacks_per_request}"
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
        metadata={key: metadata[key] for key in CLIENT_METADATA if key in metadata},
    )


def _stacks_in(request: agent_pb2.GetActionRequest) -> int:
    """The stacks a request carries, for the load-shedding estimate (its frames are checked later)."""
    return max(1, len(request.frames) // contract.STACK_BYTES)
