"""Admission control: two budgets, shares per client, a memory ceiling, and load shedding.

**Open calls and streams** (what a connection holds; bounded by memory): StreamActions, PlayGame,
health Watch and reflection streams are *sessions*: at most ``max_streams`` in all and a
``client_stream_share`` of them per client. A unary call (GetAction, GetModelInfo, health Check)
is admitted past ``max_streams``: thousands of idle streams never keep GetAction out. A named
client (a token's name, a certificate's subject, or with ``--client-key address`` an address)
holds calls on at most ``max_connections_per_client`` connections; one connection holds at most
``WATCHES_PER_CONNECTION`` health Watch streams. Past the memory ceiling, nothing new opens.

**Work in flight** (what the CPU owes; bounded by time): a GetAction call or a stream message holds
a slot from its arrival until its answer: at most ``max_in_flight`` in all and a ``client_share``
per client, and a request that would wait longer than ``max_queue_wait_ms`` for its forward pass
is refused at once (load shedding) instead of queueing behind the others.

Refusals are ``Refused`` (a gRPC status and a reason, the metrics' label); their messages name the
limit, never the caller's address or the server's load.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Callable, Iterator

import grpc

from breakout_dqn.serving.config import WATCHES_PER_CONNECTION, ServerConfig
from breakout_dqn.serving.memory import MemoryGuard

ANONYMOUS = "anonymous"  # the metrics' client label of every client without a name


class Refused(Exception):
    """A call or request turned away: its status code, a reason (``breakout_dqn_refusals_total{reason}``), a message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclasses.dataclass
class Caller:
    """One call: who made it and what it holds."""

    method: str
    peer: str  # the connection, as gRPC names it (ipv4:10.0.0.7:51234)
    client: str  # the key of its shares: its name, else its connection or address
    label: str  # the metrics' client label: its name, else ANONYMOUS
    group: str | None  # whose connections are counted (a name or an address); None: not counted
    session: bool = False  # a long-lived stream (counted against max_streams)
    watch: bool = False  # a health Watch stream
    open: bool = False  # admitted and not yet closed
    reason: str | None = None  # why a request of this call was refused, for the metrics and the access log


def address_of(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``; an IPv6 peer -> its /64 (one site's addresses are one client)."""
    peer = urllib.parse.unquote(peer)
    scheme, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if scheme == "ipv6":
        try:
            network = ipaddress.IPv6Network(f"{host.strip('[]')}/64", strict=False)
        except ValueError:
            return f"{scheme}:{host}"
        return f"ipv6:{network}"
    return f"{scheme}:{host}"


def share_of(limit: int, share: float) -> int:
    """The slots one client may hold: ``share`` of ``limit``, at least 1."""
    return max(1, int(share * limit))


class Admission:
    """Counts what callers hold and refuses past the budgets (module docstring); one per server, one event loop."""

    def __init__(self, config: ServerConfig, memory: MemoryGuard):
        self.config = config
        self.memory = memory
        self.client_work_limit = share_of(config.max_in_flight, config.client_share)
        self.client_stream_limit = share_of(config.max_streams, config.client_stream_share)
        self.expected_wait_s: Callable[[int], float] = lambda stacks: 0.0  # set to the batcher's estimate
        self.in_flight = 0  # work: requests being answered or queued
        self.open_calls = 0  # every admitted call, unary and streams
        self.sessions = 0  # long-lived streams
        self.work_by_client: collections.Counter[str] = collections.Counter()
        self.streams_by_client: collections.Counter[str] = collections.Counter()
        self.connections: dict[str, collections.Counter[str]] = {}  # group -> connection -> open calls
        self.watches: collections.Counter[str] = collections.Counter()  # connection -> health Watch streams

    def caller(self, method: str, peer: str, name: str | None, *, session: bool = False,
               watch: bool = False) -> Caller:
        """Who makes this call: its name if it has one, else its connection or address (``--client-key``)."""
        if name is not None:
            return Caller(method, peer, f"name:{name}", name, name, session, watch)
        if self.config.client_key == "address":
            address = address_of(peer)
            return Caller(method, peer, address, ANONYMOUS, address, session, watch)
        return Caller(method, peer, peer, ANONYMOUS, None, session, watch)

    def open(self, caller: Caller) -> None:
        """Admit the call (it holds an open slot until ``close``), or raise ``Refused``."""
        if self.memory.over():
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "memory",
                          "server low on memory (--memory-limit-mib): no new calls until some end; retry with "
                          "backoff or on another replica")
        if caller.session:
            self._check_session(caller)
        connections = self.connections.get(caller.group) if caller.group is not None else None
        if connections is not None and caller.peer not in connections and \
                len(connections) >= self.config.max_connections_per_client:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "connections",
                          f"per-client limit: this client already has calls open on "
                          f"--max-connections-per-client {self.config.max_connections_per_client} connections; "
                          "send them over fewer connections")
        self.open_calls += 1
        if caller.session:
            self.sessions += 1
            self.streams_by_client[caller.client] += 1
        if caller.watch:
            self.watches[caller.peer] += 1
        if caller.group is not None:
            self.connections.setdefault(caller.group, collections.Counter())[caller.peer] += 1
        caller.open = True

    def _check_session(self, caller: Caller) -> None:
        if caller.watch and self.watches[caller.peer] >= WATCHES_PER_CONNECTION:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "client_share",
                          f"this connection already holds {WATCHES_PER_CONNECTION} health Watch streams")
        if self.sessions >= self.config.max_streams:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "capacity",
                          f"server busy: --max-streams {self.config.max_streams} streams are open; retry with backoff "
                          "or on another replica")
        if self.streams_by_client[caller.client] >= self.client_stream_limit:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "client_share",
                          f"per-client limit: this client already holds its {self.client_stream_limit} open streams "
                          f"(--client-stream-share {self.config.client_stream_share:g} of --max-streams "
                          f"{self.config.max_streams}); close some first")

    def close(self, caller: Caller) -> None:
        """Give back what ``open`` took (a no-op for a call never admitted)."""
        if not caller.open:
            return
        caller.open = False
        self.open_calls -= 1
        if caller.session:
            self.sessions -= 1
            _decrement(self.streams_by_client, caller.client)
        if caller.watch:
            _decrement(self.watches, caller.peer)
        if caller.group is not None:
            connections = self.connections[caller.group]
            _decrement(connections, caller.peer)
            if not connections:
                del self.connections[caller.group]

    def check_work(self, caller: Caller) -> None:
        """``Refused`` if a request of this caller could not take a work slot now (checked before its message
        is read, so a call past the budget costs no more than its headers)."""
        self._check_work(caller)

    def _check_work(self, caller: Caller) -> None:
        if self.in_flight >= self.config.max_in_flight:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "capacity",
                          f"server busy: --max-in-flight {self.config.max_in_flight} requests are being answered; "
                          "retry with backoff")
        if self.work_by_client[caller.client] >= self.client_work_limit:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "client_share",
                          f"per-client limit: this client already has its {self.client_work_limit} requests in flight "
                          f"(--client-share {self.config.client_share:g} of --max-in-flight "
                          f"{self.config.max_in_flight}); retry with backoff once some have finished")

    def take_work(self, caller: Caller, stacks: int) -> None:
        """Take a work slot for a request of ``stacks`` stacks, or raise ``Refused``."""
        self._check_work(caller)
        if self.expected_wait_s(stacks) * 1000 > self.config.max_queue_wait_ms:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded",
                          f"server overloaded: this request would wait more than --max-queue-wait-ms "
                          f"{self.config.max_queue_wait_ms:g} for its forward pass; retry with backoff or on another "
                          "replica")
        self.in_flight += 1
        self.work_by_client[caller.client] += 1

    def give_back_work(self, caller: Caller) -> None:
        self.in_flight -= 1
        _decrement(self.work_by_client, caller.client)

    @contextlib.contextmanager
    def working(self, caller: Caller, stacks: int) -> Iterator[None]:
        """A work slot for the body of the ``with`` (``Refused`` if none can be had)."""
        self.take_work(caller, stacks)
        try:
            yield
        finally:
            self.give_back_work(caller)


def _decrement(counter: collections.Counter[str], key: str) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
