"""The access log (one JSON object a line, sampled) and a throttle for log lines that repeat.

Logger ``breakout_dqn.serve.access``: a call that ended with an error or was refused is always a
candidate, an answered one with probability ``--access-log-sample``. Lines of one kind (method,
status, reason) are throttled to ``LOG_LINES_PER_INTERVAL`` per ``LOG_INTERVAL_S``; the next line
of that kind after a pause says how many were left out, so a flood of bad requests costs a bounded
number of lines (docs/guides/serving.md, "Logs"). ``ThrottleFilter`` does the same for any logger
(it is installed on the server's and on gRPC's own).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable

from breakout_dqn.serving.config import LOG_INTERVAL_S, LOG_LINES_PER_INTERVAL

access_log = logging.getLogger("breakout_dqn.serve.access")


class Throttle:
    """At most ``lines`` per ``interval_s`` per key; ``allow`` returns (allowed, how many were left out before)."""

    def __init__(self, lines: int = LOG_LINES_PER_INTERVAL, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.lines = lines
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[object, list[float | int]] = {}  # key -> [window start, lines in it, left out]

    def allow(self, key: object) -> tuple[bool, int]:
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval_s:
            left_out = 0 if window is None else int(window[2])
            if len(self._windows) > 1024:  # keys come from a bounded set; this only guards against a bug
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            return True, left_out
        if window[1] < self.lines:
            window[1] += 1
            return True, 0
        window[2] += 1
        return False, 0


class ThrottleFilter(logging.Filter):
    """Throttles records by (logger, level, message template); the next one let through counts those left out."""

    def __init__(self, throttle: Throttle | None = None):
        super().__init__()
        self.throttle = throttle or Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        allowed, left_out = self.throttle.allow((record.name, record.levelno, str(record.msg)[:200]))
        if allowed and left_out:
            record.msg = f"{record.msg} ({left_out} more like this left out of the log in the last " \
                         f"{self.throttle.interval_s:g} s)"
        if allowed and record.exc_info and record.levelno < logging.CRITICAL:
            # One line per record: a traceback is only worth its lines at DEBUG.
            record.msg = f"{record.msg}: {record.exc_info[1]!r}"
            record.exc_info = None
            record.exc_text = None
        return allowed


class AccessLog:
    """Writes sampled access lines: peer, client, method, status, milliseconds, refusal reason."""

    def __init__(self, sample: float, throttle: Throttle | None = None,
                 draw: Callable[[], float] = random.random):
        self.sample = sample
        self.throttle = throttle or Throttle()
        self._draw = draw

    def record(self, *, peer: str, client: str, method: str, code: str, seconds: float,
               reason: str | None = None) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        if code == "OK" and not (self.sample and self._draw() < self.sample):
            return
        left_out = 0
        if code != "OK":
            allowed, left_out = self.throttle.allow((method, code, reason))
            if not allowed:
                return
        entry = {"peer": peer, "client": client, "method": method, "code": code, "ms": round(seconds * 1000, 3)}
        if reason is not None:
            entry["reason"] = reason
        if left_out:
            entry["left_out"] = left_out  # lines of this kind not written in the last interval
        access_log.info("access %s", json.dumps(entry, separators=(",", ":")))
