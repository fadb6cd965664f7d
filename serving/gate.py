"""The gate every call passes: identity, authentication and admission before its message is read.

``GatedServer`` registers every service's method handlers wrapped by ``Gate.wrap`` (no per-call
interceptor: the wrapping is done once). The wrapper runs when a call's headers arrive and takes
the request as raw bytes: so it can refuse (no token, a subject not allowed, past a budget, past
the memory ceiling) without receiving or parsing the message at all,
and decode the message itself, answering INVALID_ARGUMENT in one short line when it is not a
valid protobuf. It then counts the call (``admission.py``), ends streams idle past
``--stream-idle-timeout`` (``limits.StreamWatch``; a unary call waiting for its request too),
writes the stream's answers itself (so an idle timeout that strikes while the client has stopped
reading still ends the stream with a status), and records each call in the metrics and the
access log. The servicer finds the call's ``Caller`` in ``current_caller``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from breakout_dqn.serving.access_log import AccessLog
from breakout_dqn.serving.admission import Admission, Caller, Refused
from breakout_dqn.serving.credentials import Credentials
from breakout_dqn.serving.healthcheck import SERVICE_NAME
from breakout_dqn.serving.limits import StreamWatch
from breakout_dqn.serving.metrics import ServingMetrics

log = logging.getLogger("breakout_dqn.serve")

current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("breakout_dqn_caller", default=None)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How the gate treats a method."""

    session: bool = False  # a long-lived stream: counted against --max-streams
    idle: bool = True  # ends after --stream-idle-timeout without a message
    exempt: bool = False  # no token or subject check (health: probes carry none)
    admit: bool = True  # counted, and refused past the budgets and the memory ceiling
    watch: bool = False  # a health Watch stream (a few per connection)
    work: bool = False  # a unary call that will take a work slot: refused before its message if none is free


RULES = {
    f"/{SERVICE_NAME}/GetAction": Rule(work=True),
    f"/{SERVICE_NAME}/StreamActions": Rule(session=True),
    f"/{SERVICE_NAME}/PlayGame": Rule(session=True),
    "/grpc.health.v1.Health/Check": Rule(exempt=True, admit=False),
    "/grpc.health.v1.Health/Watch": Rule(session=True, idle=False, exempt=True, watch=True),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Rule(session=True),
}
UNARY = Rule()


@dataclasses.dataclass
class _Call:
    method: str  # short: GetAction, Watch, ...
    peer: str
    start: float
    caller: Caller | None = None
    watch: StreamWatch | None = None
    refusal: Refused | None = None


def _type_name(handler: grpc.RpcMethodHandler) -> str:
    message = getattr(handler.request_deserializer, "__self__", None)
    return message.DESCRIPTOR.full_name if message is not None else "request"


def decode(handler: grpc.RpcMethodHandler, raw: bytes, where: str = "") -> Any:
    """The request message ``raw`` holds, or ``Refused`` INVALID_ARGUMENT (one line, no traceback)."""
    if handler.request_deserializer is None:
        return raw
    try:
        return handler.request_deserializer(raw)
    except Exception:  # protobuf's DecodeError, or anything a deserializer raises on bad bytes
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument",
                      f"{where}not a valid {_type_name(handler)} message ({len(raw)} bytes)") from None


class Gate:
    """Wraps every method's handler (module docstring); one per server."""

    def __init__(self, admission: Admission, credentials: Credentials, metrics: ServingMetrics,
                 access: AccessLog, idle_timeout_s: float, watches: set[StreamWatch]):
        self.admission = admission
        self.credentials = credentials
        self.metrics = metrics
        self.access = access
        self.idle_timeout_s = idle_timeout_s
        self.watches = watches  # shared with the servicer, which ends the idle ones when it drains
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}  # method -> (its, ours)

    def wrapped(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` behind the gate, wrapped once per method (a generic handler returns the same one each time)."""
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` behind the gate: its request read as bytes, after the call is identified and admitted."""
        rule = RULES.get(method, UNARY)
        if handler.request_streaming or handler.response_streaming:
            async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
                await self._stream(method, rule, handler, requests, context)

            return grpc.stream_stream_rpc_method_handler(stream, None, handler.response_serializer)

        async def unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await self._unary(method, rule, handler, requests, context)

        return grpc.stream_unary_rpc_method_handler(unary, None, handler.response_serializer)

    def _open(self, method: str, rule: Rule, context: grpc.aio.ServicerContext) -> _Call:
        """Identify and admit the call (``call.refusal`` set if not), before any message is read."""
        call = _Call(method.rsplit("/", 1)[-1], context.peer(), time.perf_counter())
        try:
            name = self.credentials.identify(context.invocation_metadata, context.auth_context, rule.exempt)
            call.caller = self.admission.caller(method, call.peer, name, session=rule.session, watch=rule.watch)
            if rule.admit:
                self.admission.open(call.caller)
            if rule.work:
                self.admission.check_work(call.caller)
        except Refused as refusal:
            call.refusal = refusal
            return call
        current_caller.set(call.caller)
        call.watch = StreamWatch(self.idle_timeout_s if rule.idle else 0.0)
        self.watches.add(call.watch)
        return call

    async def _unary(self, method: str, rule: Rule, handler: grpc.RpcMethodHandler, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext) -> Any:
        call = self._open(method, rule, context)
        code: grpc.StatusCode | None = None
        try:
            if call.refusal is not None:
                raise call.refusal
            assert call.watch is not None
            raw = await _first(requests)
            call.watch.received()
            request = decode(handler, raw)
            del raw  # a large message is not kept twice (its bytes and its parsed copy) while it is answered
            return await handler.unary_unary(request, context)
        except Refused as refusal:
            call.refusal = refusal
            await context.abort(refusal.code, refusal.message)
        except asyncio.CancelledError:
            ended = _ended(call)
            if ended is None:
                code = grpc.StatusCode.CANCELLED
                raise
            await context.abort(*ended)
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):  # the servicer's own context.abort
                raise
            log.exception("%s failed", call.method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        finally:
            self._close(call, context, code)

    async def _stream(self, method: str, rule: Rule, handler: grpc.RpcMethodHandler,
                      requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        call = self._open(method, rule, context)
        code: grpc.StatusCode | None = None
        try:
            if call.refusal is not None:
                raise call.refusal
            watch = call.watch
            assert watch is not None
            if handler.unary_stream is not None:  # health Watch: one request, then answers
                raw = await _first(requests)
                watch.received()
                result = handler.unary_stream(decode(handler, raw), context)
            else:
                result = handler.stream_stream(_messages(requests, handler, watch), context)
            await _respond(result, context, watch)
        except Refused as refusal:
            call.refusal = refusal
            _set_status(context, refusal.code, refusal.message)
        except asyncio.CancelledError:
            ended = _ended(call)
            if ended is None:
                code = grpc.StatusCode.CANCELLED
                raise
            _set_status(context, *ended)
        except Exception as error:
            log.exception("%s failed", call.method)
            _set_status(context, grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        finally:
            self._close(call, context, code)

    def _close(self, call: _Call, context: grpc.aio.ServicerContext, code: grpc.StatusCode | None) -> None:
        """Give back what the call held; count it in the metrics and the access log."""
        if call.watch is not None:
            call.watch.close()
            self.watches.discard(call.watch)
        caller = call.caller
        if caller is not None:
            self.admission.close(caller)
        code = code or context.code() or grpc.StatusCode.OK
        reason = call.refusal.reason if call.refusal is not None else caller.reason if caller is not None else None
        if reason is None and code == grpc.StatusCode.INVALID_ARGUMENT:
            reason = "invalid_argument"
        if reason is not None:
            self.metrics.refused(reason)
        seconds = time.perf_counter() - call.start
        label = caller.label if caller is not None else "anonymous"
        self.metrics.finished(call.method, code.name, label, seconds)
        self.access.record(peer=call.peer, client=label, method=call.method, code=code.name, seconds=seconds,
                           reason=reason)


class _GatedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, gate: Gate):
        self.inner = inner
        self.gate = gate

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self.inner.service(details)
        return None if handler is None else self.gate.wrapped(details.method, handler)


class GatedServer:
    """What the generated ``add_*Servicer_to_server`` functions register on: a grpc.aio server whose every
    method handler goes through ``gate``."""

    def __init__(self, server: grpc.aio.Server, gate: Gate):
        self.server = server
        self.gate = gate

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.server.add_registered_method_handlers(
            service, {name: self.gate.wrapped(f"/{service}/{name}", handler) for name, handler in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_GatedGeneric(handler, self.gate) for handler in handlers))


async def _first(requests: AsyncIterator[bytes]) -> bytes:
    """A unary call's one request (``Refused`` if the client closed without sending it)."""
    try:
        return await requests.__anext__()
    except StopAsyncIteration:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", "the call carried no request") from None


async def _messages(requests: AsyncIterator[bytes], handler: grpc.RpcMethodHandler,
                    watch: StreamWatch) -> AsyncIterator[Any]:
    """A stream's requests, decoded; the watch is told when each arrives."""
    index = 0
    async for raw in requests:
        watch.received()
        message = decode(handler, raw, f"message {index} of the stream: ")
        del raw  # not kept twice (its bytes and its parsed copy) while it is answered
        yield message
        index += 1


async def _respond(result: Any, context: grpc.aio.ServicerContext, watch: StreamWatch) -> None:
    """Write a streaming handler's answers (an async generator), or await one that writes its own."""
    if not inspect.isasyncgen(result):
        await result
        return
    async with contextlib.aclosing(result) as answers:
        async for answer in answers:
            watch.answered()  # idle from here: a write the client does not read still times out
            await context.write(answer)


def _ended(call: _Call) -> tuple[grpc.StatusCode, str] | None:
    """The status a watch ended the call with (the cancellation was ours), else None (the client's)."""
    if call.watch is None or call.watch.ended is None:
        return None
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()  # our own cancellation, answered here (Python >= 3.11)
    return call.watch.ended


def _set_status(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End a stream with this status once its handler returns (see ``service._EndCall`` for why not abort)."""
    context.set_code(code)
    context.set_details(details)
