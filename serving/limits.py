"""What one client may hold, and how long a stream may sit idle.

``ClientShares`` counts the calls and streams each client holds, so that one client (a
connection, or with ``--client-key address`` an IP address) cannot take more than
``--client-share`` of ``--max-concurrent``: while it floods, the others are still admitted.
``StreamWatch`` ends a StreamActions or PlayGame stream that sent no message for ``--stream-idle-timeout``
seconds (or, when the server drains, one that is waiting for its next request), by cancelling its
handler, which then answers with the status the watch names. Per request, a watch costs one clock
read; its timer re-arms itself only once per timeout period.
"""

from __future__ import annotations

import asyncio

import grpc

from breakout_dqn.serving.config import CLIENT_KEY, CLIENT_KEYS, CLIENT_SHARE, MAX_CONCURRENT


def per_client_limit(max_concurrent: int, client_share: float) -> int:
    """The calls + streams one client may hold: ``client_share`` of ``max_concurrent``, at least 1."""
    return max(1, int(client_share * max_concurrent))


class ClientShares:
    """Calls and streams held per client; ``take`` refuses past the per-client limit."""

    def __init__(self, max_concurrent: int = MAX_CONCURRENT, client_share: float = CLIENT_SHARE,
                 client_key: str = CLIENT_KEY):
        if not 0 < client_share <= 1:
            raise ValueError("client_share must be in (0, 1]")
        if client_key not in CLIENT_KEYS:
            raise ValueError(f"client_key must be one of {CLIENT_KEYS}")
        self.limit = per_client_limit(max_concurrent, client_share)
        self.client_share = client_share
        self.max_concurrent = max_concurrent
        self.by_address = client_key == "address"
        self.held: dict[str, int] = {}

    def key(self, peer: str) -> str:
        """``ipv4:10.0.0.7:51234`` is one connection; ``ipv4:10.0.0.7`` the whole address."""
        return peer.rsplit(":", 1)[0] if self.by_address else peer

    def take(self, peer: str) -> tuple[str, str | None]:
        """``(key, None)`` with a slot taken, or ``(key, why)`` when this client holds its share."""
        key = self.key(peer)
        held = self.held.get(key, 0)
        if held >= self.limit:
            return key, (
                f"per-client limit: {'this address' if self.by_address else 'this connection'} ({key}) already "
                f"holds {held} calls and streams (--client-share {self.client_share:g} of --max-concurrent "
                f"{self.max_concurrent}); retry with backoff once some have finished"
            )
        self.held[key] = held + 1
        return key, None

    def give_back(self, key: str) -> None:
        held = self.held[key] - 1
        if held:
            self.held[key] = held
        else:
            del self.held[key]


class StreamWatch:
    """One open stream's idle timer; ``end`` makes its handler answer ``ended`` (a status and message)."""

    def __init__(self, idle_timeout_s: float):
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.idle_timeout_s = idle_timeout_s
        self.busy = False  # answering a request: never idle
        self.last = self.loop.time()  # when the stream opened or last answered
        self.ended: tuple[grpc.StatusCode, str] | None = None
        self._timer = self.loop.call_later(idle_timeout_s, self._check) if idle_timeout_s > 0 else None

    def answered(self) -> None:
        self.busy = False
        self.last = self.loop.time()

    def _check(self) -> None:
        idle = self.loop.time() - self.last
        if self.busy or idle < self.idle_timeout_s:
            wait = self.idle_timeout_s if self.busy else self.idle_timeout_s - idle
            self._timer = self.loop.call_later(wait, self._check)
            return
        self.end(grpc.StatusCode.DEADLINE_EXCEEDED,
                 f"no request on this stream for {self.idle_timeout_s:g} s (the server's --stream-idle-timeout): "
                 "closed to free its slot; open a new stream to go on")

    def end(self, code: grpc.StatusCode, message: str) -> None:
        """Cancel the handler (waiting for a request or writing an answer); it aborts with ``code``."""
        if self.ended is None and self.task is not None:
            self.ended = (code, message)
            self.task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
