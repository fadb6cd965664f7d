"""Prometheus metrics (``prometheus-client``), served at ``http://HOST:--metrics-port/metrics``.

The names are an interface: the Kubernetes HorizontalPodAutoscaler scales on
``breakout_dqn_in_flight`` and the PodMonitor scrapes the rest (docs/guides/serving.md, "Metrics").
Each server has its own registry, so several servers in one process (the tests) never share counts.
The ``client`` label is a client's name (tokens file, certificate subject) or ``anonymous``: its
number of values is bounded by the names an operator configured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 128, 256)


class ServingMetrics:
    """The server's counters, gauges and histograms (one registry per server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("breakout_dqn_requests", "Calls answered, by method and status code",
                                ["method", "code"], registry=registry)
        self.refusals = Counter("breakout_dqn_refusals", "Calls and requests refused, by reason "
                                "(unauthenticated, permission_denied, client_share, capacity, overloaded, memory, "
                                "connections, invalid_argument)", ["reason"], registry=registry)
        self.in_flight = Gauge("breakout_dqn_in_flight", "Requests being answered plus queued for the batcher",
                               registry=registry)
        self.queue_wait = Histogram("breakout_dqn_queue_wait_seconds", "Time a request waited for its forward pass",
                                    buckets=LATENCY_BUCKETS_S, registry=registry)
        self.batch_size = Histogram("breakout_dqn_batch_size", "Stacks per forward pass", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.duration = Histogram("breakout_dqn_request_duration_seconds", "Call duration (a stream's whole life)",
                                  ["method"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.open_streams = Gauge("breakout_dqn_open_streams", "Calls and streams open (admitted, not yet ended)",
                                  registry=registry)
        self.client_requests = Counter("breakout_dqn_client_requests", "Calls per client (a name, or anonymous)",
                                       ["client"], registry=registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}  # labelled series, looked up once

    def watch(self, in_flight: Callable[[], float], open_streams: Callable[[], float]) -> None:
        """Read the two gauges from these functions at each scrape."""
        self.in_flight.set_function(in_flight)
        self.open_streams.set_function(open_streams)

    def finished(self, method: str, code: str, client: str, seconds: float) -> None:
        key = (method, code, client)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks each time: keep the series it returns
            children = (self.requests.labels(method, code), self.client_requests.labels(client),
                        self.duration.labels(method))
            self._children[key] = children
        children[0].inc()
        children[1].inc()
        children[2].observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def forward_pass(self, stacks: int, waits_s: list[float]) -> None:
        """One forward pass of ``stacks`` stacks, and how long each of its requests waited for it."""
        self.batch_size.observe(stacks)
        for wait in waits_s:
            self.queue_wait.observe(wait)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on ``host:port`` in a thread; return the port (0 picks a free one)."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
