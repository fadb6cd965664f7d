"""``breakout-dqn serve``: the gRPC server's lifecycle (grpc.aio, one event loop).

Start: bind (127.0.0.1 by default), health NOT_SERVING, load the ONNX model and check its
contract (a mismatch stops the server with a clear error, exit 2), warm up, health SERVING.
Serve: AgentService (dynamic batching) behind the gate (``serving/gate.py``: identity, tokens,
admission, access log, metrics), grpc.health.v1, server reflection (``--no-reflection`` turns it
off), HTTP/2 limits per connection, keepalive pings, a maximum connection age, optionally TLS
(mutual with a client CA) and Prometheus metrics. SIGHUP: reload the tokens file, the subjects
list and the TLS files. SIGTERM/SIGINT: health NOT_SERVING, refuse new calls, end idle streams,
finish the in-flight calls within ``--grace`` seconds, exit 0. Flags and limits:
docs/guides/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from breakout.v1 import agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.errors import BreakoutDQNError, ExitCode, UsageError
from breakout_dqn.onnx_model import ModelLoadError, OnnxPolicy, check_metadata_contract
from breakout_dqn.serving import options
from breakout_dqn.serving.access_log import AccessLog, ThrottleFilter
from breakout_dqn.serving.admission import Admission
from breakout_dqn.serving.config import (
    CLOSE_GRACE_S,
    DRAIN_SETTLE_S,
    MAX_PING_STRIKES,
    MIN_PING_INTERVAL_S,
    MODEL_ENV,
    STREAM_WINDOW_BYTES,
    ServerConfig,
    default_model_path,
)
from breakout_dqn.serving.credentials import Credentials, check_tls_settings, read_server_token, read_tokens_file
from breakout_dqn.serving.gate import Gate, GatedServer
from breakout_dqn.serving.healthcheck import SERVICE_NAME
from breakout_dqn.serving.memory import MIB, MemoryGuard, default_ceiling_bytes, release_free_memory
from breakout_dqn.serving.metrics import ServingMetrics
from breakout_dqn.serving.service import AgentServicer, Policy

log = logging.getLogger("breakout_dqn.serve")
TRIM_EVERY_S = 10.0  # how often a server whose calls have ended hands freed memory back to the kernel


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The server's channel arguments: message sizes, HTTP/2 flow control, keepalive, connection age."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Flow control: a stream may send STREAM_WINDOW_BYTES ahead of what the server has read (more only for
        # the message being read), and BDP probing, which grows windows to megabytes per stream, is off: a
        # client that sends and never reads cannot make the server buffer without bound (docs/guides/serving.md).
        ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        # overload_protection off: count streams open on the wire, as the client does (gRPC's default also
        # counts streams not yet freed, and refuses with REFUSED_STREAM streams the client may open).
        ("grpc.http.overload_protection", 0),
        # Ping every connection quiet for keepalive_time, close it when a ping goes unanswered for
        # keepalive_timeout: a peer that vanished without closing its connection loses its calls within their sum.
        ("grpc.keepalive_time_ms", round(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout_s * 1000)),
        # grpcio 1.85 closes a connection whose ping goes unanswered after the *ping* timeout (default 60 s),
        # not the keepalive timeout (measured: a frozen client lost its stream after 2.0 s with this set too).
        ("grpc.http2.ping_timeout_ms", round(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # the server's own pings are never capped
        # Clients may ping every MIN_PING_INTERVAL_S; more often earns a strike, past MAX_PING_STRIKES a GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", round(MIN_PING_INTERVAL_S * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", round(config.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(config.max_connection_age_grace_s * 1000)),
        ]
    return options


def load_policy(config: ServerConfig) -> OnnxPolicy:
    """Load the model and refuse it unless its graph and metadata match the contract."""
    assert config.model is not None
    policy = OnnxPolicy(config.model, intra_op_threads=config.threads)
    check_metadata_contract(policy.metadata)
    return policy


def throttle_logs() -> None:
    """Bound the lines a flood of failing calls can write: the server's logger and gRPC's (``ThrottleFilter``)."""
    for name in ("breakout_dqn.serve", "grpc._cython.cygrpc", "grpc.aio"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, ThrottleFilter) for existing in logger.filters):
            logger.addFilter(ThrottleFilter())


class AgentServer:
    """One grpc.aio server: ``start`` binds, ``load`` serves the model, ``stop`` drains, ``reload`` on SIGHUP."""

    def __init__(self, config: ServerConfig, load: Callable[[ServerConfig], Policy] = load_policy):
        self.config = config
        self._load = load
        ceiling = config.memory_limit_mib * MIB if config.memory_limit_mib else default_ceiling_bytes()
        self.memory = MemoryGuard(ceiling)
        self.admission = Admission(config, self.memory)
        self.metrics = ServingMetrics()
        self.metrics.watch(lambda: self.admission.in_flight, lambda: self.admission.open_calls)
        self.credentials = Credentials(config)
        self.servicer = AgentServicer(config, self.admission, self.metrics)
        self.gate = Gate(self.admission, self.credentials, self.metrics, AccessLog(config.access_log_sample),
                         config.stream_idle_timeout_s, self.servicer.watches)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start answering (health NOT_SERVING until ``load``); return the port.

        Raises OSError when an address cannot be bound.
        """
        config = self.config
        throttle_logs()
        server = grpc.aio.server(options=grpc_options(config))
        gated = GatedServer(server, self.gate)  # every service's handlers behind the gate
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, gated)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, gated)
        if config.reflection:
            names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(names), gated)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        host = f"[{config.host}]" if ":" in config.host and not config.host.startswith("[") else config.host
        address = f"{host}:{config.port}"
        try:
            if self.credentials.server_credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, self.credentials.server_credentials)
        except RuntimeError as error:
            raise OSError(f"cannot bind {address}: {error}") from None
        if config.metrics_port:
            self.metrics_port = self.metrics.serve(config.host.strip("[]"), config.metrics_port)
        await server.start()
        self._server = server
        self._trimmer = asyncio.get_running_loop().create_task(self._trim_memory())
        return self.port

    async def _trim_memory(self) -> None:
        """Every TRIM_EVERY_S, if calls have ended since, hand the memory they freed back to the kernel."""
        highest = 0
        while True:
            await asyncio.sleep(TRIM_EVERY_S)
            if self.admission.open_calls < highest:
                release_free_memory()
            highest = self.admission.open_calls

    async def load(self) -> Policy:
        """Load the model off the event loop, warm it up, attach it, report SERVING."""
        loop = asyncio.get_running_loop()
        policy = await loop.run_in_executor(None, self._load, self.config)
        warmup = np.zeros((1, *contract.STACK_SHAPE), dtype=np.uint8)
        for batch in (1, min(self.config.max_batch, 8), 1):
            await loop.run_in_executor(None, policy.q_values, np.repeat(warmup, batch, axis=0))
        if self.servicer.draining:  # stopped while loading
            return policy
        self.servicer.attach(policy)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return policy

    def reload(self) -> None:
        """SIGHUP: read the tokens file, the subjects list and the TLS files again."""
        log.info("SIGHUP: reloading credentials")
        self.credentials.reload()

    def request_stop(self) -> None:
        """Begin draining (a signal handler on the loop); a second call cancels what is left."""
        loop = asyncio.get_running_loop()
        if self._stopping is None:
            log.info("draining: health NOT_SERVING, finishing in-flight calls (up to %.0f s)", self.config.grace_s)
            self._stopping = loop.create_task(self.stop())
        elif self._server is not None:
            log.warning("second signal: cancelling the calls still in flight")
            loop.create_task(self._server.stop(0))

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, finish in-flight ones (up to ``grace_s``), close.

        Streams waiting for their next message end at once (UNAVAILABLE); a stream whose request
        arrives while the server drains gets UNAVAILABLE after its answer. Once the requests being
        answered are done, the server sends GOAWAY, gives the calls that had already arrived
        CLOSE_GRACE_S to be refused, and cuts what is left (health Watch streams).
        """
        grace = self.config.grace_s if grace_s is None else grace_s
        loop = asyncio.get_running_loop()
        settled = loop.time() + min(DRAIN_SETTLE_S, grace)
        await self.health.enter_graceful_shutdown()
        self.servicer.drain()
        idle = await self.servicer.wait_idle(grace)
        # grpc.aio stops taking calls from gRPC core at GOAWAY, and core cancels those it had received:
        # give clients that watch health the time to stop sending them here first.
        await asyncio.sleep(max(0.0, settled - loop.time()))
        if not idle:
            log.warning("grace period over with %d requests being answered", self.servicer.in_flight)
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self._server is not None:
            # Not stop(0): calls being refused (UNAVAILABLE, retried elsewhere) would be cut instead.
            await self._server.stop(min(CLOSE_GRACE_S, grace) if idle else None)
        await self.servicer.close()
        self.metrics.stop()

    async def wait(self) -> None:
        """Until the server has stopped (by ``request_stop``/``stop`` or a signal)."""
        if self._server is not None:
            await self._server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


async def serve(config: ServerConfig, load: Callable[[ServerConfig], Policy] = load_policy) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    try:
        server = AgentServer(config, load)
        port = await server.start()
    except BreakoutDQNError as error:
        print(f"{options.PROG}: error: {error}", file=sys.stderr, flush=True)
        return int(error.exit_code)
    except OSError as error:
        print(f"{options.PROG}: error: {error}", file=sys.stderr, flush=True)
        return int(ExitCode.FAILURE)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    log.info("listening on %s:%d (health NOT_SERVING while the model loads)", config.host, port)
    log_protection(config, server)
    try:
        policy = await server.load()
    except Exception as error:  # ModelLoadError, or a graph that fails its warm-up pass
        reason = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
        print(f"{options.PROG}: error: refusing to serve {config.model}: {reason}", file=sys.stderr, flush=True)
        await server.stop(0)
        return int(ExitCode.USAGE)
    if not server.servicer.draining:
        log.info("serving %s (model version %s) on %s:%d: max batch %d, max delay %.2f ms, max %d stacks/request",
                 config.model, policy.version, config.host, port, config.max_batch, config.max_delay_ms,
                 config.max_stacks_per_request)
    await server.wait()
    stats = server.servicer.batcher.stats if server.servicer.batcher else None
    log.info("stopped after %s", stats)
    return int(ExitCode.OK)


def log_protection(config: ServerConfig, server: AgentServer) -> None:
    """What guards the server (never a token), and a loud warning when an open network reaches it unguarded."""
    tls = "off (plaintext)"
    if config.tls_cert is not None:
        tls = "mutual (client certificates required)" if config.tls_client_ca is not None else "on"
    tokens = "per-client tokens" if config.tokens_file else "token required" if config.auth_token else "no token"
    admission = server.admission
    log.info(
        "protection: TLS %s, %s, reflection %s; %d requests in flight (%d per client), %d streams (%d per client, "
        "%d per connection), streams idle > %s closed, memory ceiling %d MiB, metrics %s",
        tls, tokens, "on" if config.reflection else "off", config.max_in_flight, admission.client_work_limit,
        config.max_streams, admission.client_stream_limit, config.max_streams_per_connection,
        f"{config.stream_idle_timeout_s:g} s" if config.stream_idle_timeout_s > 0 else "never",
        server.memory.ceiling_bytes // MIB,
        f"on port {server.metrics_port}" if server.metrics_port else "off",
    )
    if config.loopback:
        return
    if config.tls_cert is None:
        log.warning("OPEN NETWORK WITHOUT TLS: %s is reachable from other machines and everything it carries "
                    "(tokens included) crosses the network in clear text; set --tls-cert/--tls-key, or put a "
                    "TLS-terminating proxy in front", config.host)
    if not (config.tokens_file or config.auth_token or config.tls_client_ca):
        log.warning("OPEN NETWORK WITHOUT AUTHENTICATION: anyone who reaches %s:%d gets answers; set --tokens-file, "
                    "--auth-token-file or --tls-client-ca, or put an authenticating proxy in front", config.host,
                    server.port)


def build_parser() -> argparse.ArgumentParser:
    """`serve`'s flags, one per ``ServerConfig`` field (``serving/options.py``)."""
    return options.build_parser()


def resolve(config: ServerConfig) -> ServerConfig:
    """The config with its model path and token filled in; ``BreakoutDQNError`` for a setting that cannot work."""
    model = config.model or default_model_path()
    if not model.is_file():
        hint = f" (no --model given; set --model or ${MODEL_ENV}, or export a model there)"
        if config.model is not None:
            from_variable = os.environ.get(MODEL_ENV, "").strip() == str(config.model)
            hint = f" (from ${MODEL_ENV})" if from_variable else ""
        raise UsageError(f"model file not found: {model}{hint}")
    config.model = model
    config.auth_token = read_server_token(config)
    if config.tokens_file is not None:
        read_tokens_file(config.tokens_file)
    check_tls_settings(config)  # reads and checks the TLS files and the subjects list now, before the model loads
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = resolve(options.config_from_args(args))
    except BreakoutDQNError as error:
        print(f"{options.PROG}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    logging.basicConfig(level=config.log_level, format="%(asctime)s serve %(levelname)s %(message)s",
                        stream=sys.stderr)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
