"""How long a stream may sit idle: ``StreamWatch``, one per open stream (``serving/gate.py``).

A StreamActions or PlayGame stream that received no message for ``--stream-idle-timeout``
seconds (or, when the server drains, one waiting for its next request) is ended by cancelling its
handler, which then answers with the status the watch names. "Idle" starts when a request is
answered, not when its answer is written: a client that stops reading its answers stalls the
server's write, and its stream still ends on time, with a status the client reads after the
answers already sent. Per request, a watch costs one clock read; its timer re-arms itself only
once per timeout period.
"""

from __future__ import annotations

import asyncio

import grpc


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

    def received(self) -> None:
        self.busy = True

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
        """Cancel the handler (waiting for a request or writing an answer); it answers with ``code``."""
        if self.ended is None and self.task is not None:
            self.ended = (code, message)
            self.task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
