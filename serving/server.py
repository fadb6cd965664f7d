"""``breakout-dqn serve``: the gRPC server's lifecycle (grpc.aio, one event loop).

Start: bind (127.0.0.1 by default), health NOT_SERVING, load the ONNX model and check its
contract (a mismatch stops the server with a clear error, exit 2), warm up, health SERVING.
Serve: AgentService (dynamic batching), grpc.health.v1 and server reflection, a max message
size, a concurrency limit with a share per client, an idle timeout for streams, keepalive pings
(with a policy against clients that ping too often), a maximum connection age, and optionally
TLS (mutual with a client CA) and a token. SIGTERM/SIGINT: health NOT_SERVING, refuse new calls,
end idle streams, finish the in-flight calls within ``--grace`` seconds, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from breakout.v1 import agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import ModelLoadError, OnnxPolicy, check_metadata_contract
from breakout_dqn.serving.config import (
    AUTH_TOKEN_ENV,
    CLIENT_KEY,
    CLIENT_KEYS,
    CLIENT_SHARE,
    CLOSE_GRACE_S,
    DEFAULT_HOST,
    DEFAULT_MODEL,
    DEFAULT_PORT,
    DRAIN_SETTLE_S,
    GRACE_S,
    HOST_ENV,
    INLINE_GAP_MS,
    KEEPALIVE_TIME_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_BATCH,
    MAX_CONCURRENT,
    MAX_CONNECTION_AGE_GRACE_S,
    MAX_CONNECTION_AGE_S,
    MAX_DELAY_MS,
    MAX_PING_STRIKES,
    MAX_STACKS_PER_REQUEST,
    MIN_PING_INTERVAL_S,
    MODEL_ENV,
    PORT_ENV,
    STREAM_HEADROOM,
    STREAM_IDLE_TIMEOUT_S,
    ServerConfig,
    default_host,
    default_model_path,
    default_port,
)
from breakout_dqn.serving.healthcheck import SERVICE_NAME
from breakout_dqn.serving.limits import per_client_limit
from breakout_dqn.serving.security import SecurityConfigError, TokenAuth, read_token, server_credentials
from breakout_dqn.serving.service import AgentServicer, Policy, ServiceLimits

log = logging.getLogger("breakout_dqn.serve")


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The server's channel arguments: message sizes, keepalive and its enforcement, connection age."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Ping every connection (with or without calls) that has been quiet for keepalive_time, close it
        # when a ping goes unanswered for keepalive_timeout: a peer that vanished without closing its
        # connection (a frozen or unplugged machine) loses its calls and streams within their sum.
        ("grpc.keepalive_time_ms", round(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout_s * 1000)),
        # grpcio 1.85 closes a connection whose ping goes unanswered after the *ping* timeout (default
        # 60 s), not the keepalive timeout (measured: a frozen client kept its stream for minutes with
        # keepalive 1 s + 1 s, and lost it after 2.0 s with this set too).
        ("grpc.http2.ping_timeout_ms", round(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # the server's own pings are never capped
        # Enforcement: clients may ping (with or without calls) every MIN_PING_INTERVAL_S; a client that
        # pings more often gets a strike per ping, and past MAX_PING_STRIKES a GOAWAY (too_many_pings).
        ("grpc.http2.min_ping_interval_without_data_ms", round(MIN_PING_INTERVAL_S * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
    # Streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): one share plus a little headroom
    # (so the share's RESOURCE_EXHAUSTED still says why). A flooding client's other calls then wait in
    # that client, not in the server's queue of incoming calls, where every other client's calls would
    # wait behind them (README, "Protecting the server": p50 ~1 s -> ~0.2 s on a loaded 2-core machine).
    # overload_protection off: count streams open on the wire, as the client does (gRPC's default also
    # counts streams not yet freed, and refuses with REFUSED_STREAM streams the client may open).
    options += [
        ("grpc.max_concurrent_streams", per_client_limit(config.max_concurrent, config.client_share) + STREAM_HEADROOM),
        ("grpc.http.overload_protection", 0),
    ]
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", round(config.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(config.max_connection_age_grace_s * 1000)),
        ]
    return options


def load_policy(config: ServerConfig) -> OnnxPolicy:
    """Load the model and refuse it unless its graph and metadata match the contract."""
    policy = OnnxPolicy(config.model, intra_op_threads=config.intra_op_threads)
    check_metadata_contract(policy.metadata)
    return policy


class AgentServer:
    """One grpc.aio server: ``start`` binds, ``load`` serves the model, ``stop`` drains."""

    def __init__(self, config: ServerConfig, load: Callable[[ServerConfig], Policy] = load_policy):
        self.config = config
        self._load = load
        self.servicer = AgentServicer(
            ServiceLimits(config.max_concurrent, config.max_stacks_per_request, config.client_share,
                          config.client_key, config.stream_idle_timeout_s),
            max_batch=config.max_batch,
            max_delay_s=config.max_delay_ms / 1000,
            inline_gap_s=None if config.inline_gap_ms is None else config.inline_gap_ms / 1000,
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start answering (health NOT_SERVING until ``load``); return the port.

        Raises SecurityConfigError for unusable TLS files, OSError when the address cannot be bound.
        """
        config = self.config
        credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        interceptors = [TokenAuth(config.auth_token)] if config.auth_token else []
        server = grpc.aio.server(options=grpc_options(config), interceptors=interceptors)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        host = self.config.host
        if ":" in host and not host.startswith("["):  # an IPv6 address
            host = f"[{host}]"
        address = f"{host}:{self.config.port}"
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise OSError(f"cannot bind {address}: {error}") from None
        await server.start()
        self._server = server
        return self.port

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

        StreamActions and PlayGame streams waiting for their next message end at once (UNAVAILABLE); a stream
        whose request arrives while the server drains gets UNAVAILABLE after its answer. Once the
        requests being answered are done, the server sends GOAWAY (no new calls), gives the calls
        that had already arrived CLOSE_GRACE_S to be refused, and cuts what is left (health Watch
        streams), so an open stream does not hold the shutdown for the whole grace period.
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
        if self._server is not None:
            # Not stop(0): calls being refused (UNAVAILABLE, retried elsewhere) would be cut instead.
            await self._server.stop(min(CLOSE_GRACE_S, grace) if idle else None)
        await self.servicer.close()

    async def wait(self) -> None:
        """Until the server has stopped (by ``request_stop``/``stop`` or a signal)."""
        if self._server is not None:
            await self._server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


async def serve(config: ServerConfig, load: Callable[[ServerConfig], Policy] = load_policy) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    server = AgentServer(config, load)
    try:
        port = await server.start()
    except SecurityConfigError as error:
        print(f"breakout-dqn serve: error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:
        print(f"breakout-dqn serve: error: {error}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.request_stop)
    log.info("listening on %s:%d (health NOT_SERVING while the model loads)", config.host, port)
    log_protection(config)
    try:
        policy = await server.load()
    except Exception as error:  # ModelLoadError, or a graph that fails its warm-up pass
        reason = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
        print(f"breakout-dqn serve: error: refusing to serve {config.model}: {reason}", file=sys.stderr, flush=True)
        await server.stop(0)
        return 2
    if not server.servicer.draining:
        log.info(
            "serving %s (model version %s) on %s:%d: max batch %d, max delay %.2f ms, max %d stacks/request, "
            "max %d calls in flight",
            config.model, policy.version, config.host, port, config.max_batch, config.max_delay_ms,
            config.max_stacks_per_request, config.max_concurrent,
        )
    await server.wait()
    stats = server.servicer.batcher.stats if server.servicer.batcher else None
    log.info("stopped after %s", stats)
    return 0


def log_protection(config: ServerConfig) -> None:
    """One line on what guards the server (never the token itself)."""
    tls = "off (plaintext)"
    if config.tls_cert is not None:
        tls = "mutual (client certificates required)" if config.tls_client_ca is not None else "on"
    age = f"{config.max_connection_age_s:g} s + {config.max_connection_age_grace_s:g} s grace"
    log.info(
        "protection: TLS %s, token %s, %d calls and streams per client (%s), streams idle > %s closed, "
        "keepalive %g s + %g s, connection age %s",
        tls, "required" if config.auth_token else "off",
        per_client_limit(config.max_concurrent, config.client_share), config.client_key,
        f"{config.stream_idle_timeout_s:g} s" if config.stream_idle_timeout_s > 0 else "never",
        config.keepalive_time_s, config.keepalive_timeout_s, age if config.max_connection_age_s > 0 else "unbounded",
    )
    if config.auth_token and config.tls_cert is None and config.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("token authentication without TLS: the token crosses the network in clear text")


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` parser (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="breakout-dqn serve",
        description=f"Serve greedy Breakout actions over gRPC ({SERVICE_NAME}) from an ONNX model on "
        "onnxruntime, with dynamic batching, grpc.health.v1, server reflection and graceful shutdown on SIGTERM.",
    )
    parser.add_argument("--model", type=Path, default=None,
                        help=f"ONNX model (default: ${MODEL_ENV}, else {DEFAULT_MODEL} in the repository)")
    parser.add_argument("--host", default=default_host(),
                        help=f"interface to bind, 0.0.0.0 for all (default: ${HOST_ENV}, else {DEFAULT_HOST}; "
                        "now %(default)s)")
    parser.add_argument("--port", type=int, default=default_port(),
                        help=f"0 picks a free port (default: ${PORT_ENV}, else {DEFAULT_PORT}; "
                        "now %(default)s)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help="stacks per forward pass (default %(default)s)")
    parser.add_argument("--max-delay-ms", type=float, default=MAX_DELAY_MS,
                        help="longest a batch waits to grow as large as the previous one; sequential "
                        "callers never wait (default %(default)s)")
    parser.add_argument("--inline-gap-ms", type=float, default=INLINE_GAP_MS,
                        help="a request of at most 4 stacks that finds the server idle this long after its "
                        "last forward pass runs on the event loop, skipping two thread hand-offs (the "
                        "sequential game client's fast path); negative turns it off (default %(default)s)")
    parser.add_argument("--max-concurrent", type=int, default=MAX_CONCURRENT,
                        help="GetAction calls plus open StreamActions and PlayGame streams before RESOURCE_EXHAUSTED "
                        "(default %(default)s)")
    parser.add_argument("--max-stacks-per-request", type=int, default=MAX_STACKS_PER_REQUEST,
                        help="also sets the max message size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: min(2, cores))")
    parser.add_argument("--grace", type=float, default=GRACE_S,
                        help="seconds in-flight calls get to finish on SIGTERM (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_protection_flags(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def add_protection_flags(parser: argparse.ArgumentParser) -> None:
    """Flags against misbehaving clients and an open network (README, "Protecting the server")."""
    group = parser.add_argument_group("protection against misbehaving clients and an open network")
    group.add_argument("--client-share", type=float, default=CLIENT_SHARE,
                       help="part of --max-concurrent one client may hold; its calls past it get "
                       "RESOURCE_EXHAUSTED (default %(default)s)")
    group.add_argument("--client-key", choices=CLIENT_KEYS, default=CLIENT_KEY,
                       help="one client is one connection, or one IP address (every client behind a proxy "
                       "or NAT shares one) (default %(default)s)")
    group.add_argument("--stream-idle-timeout", type=float, default=STREAM_IDLE_TIMEOUT_S,
                       help="seconds a StreamActions or PlayGame stream may go without a message before it ends with "
                       "DEADLINE_EXCEEDED; 0: never (default %(default)s)")
    group.add_argument("--keepalive-time", type=float, default=KEEPALIVE_TIME_S,
                       help="seconds of quiet before the server pings a connection (default %(default)s)")
    group.add_argument("--keepalive-timeout", type=float, default=KEEPALIVE_TIMEOUT_S,
                       help="seconds an unanswered ping waits before the connection is closed; a vanished "
                       "client is noticed within --keepalive-time + this (default %(default)s)")
    group.add_argument("--max-connection-age", type=float, default=MAX_CONNECTION_AGE_S,
                       help="seconds (+-10%% jitter) after which a connection is asked to close (GOAWAY), so "
                       "clients reconnect and spread over replicas; 0: never (default %(default)s)")
    group.add_argument("--max-connection-age-grace", type=float, default=MAX_CONNECTION_AGE_GRACE_S,
                       help="seconds the calls and streams still open on such a connection get before it "
                       "closes (default %(default)s)")
    group.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve over TLS")
    group.add_argument("--tls-key", type=Path, default=None, help="the certificate's PEM private key")
    group.add_argument("--tls-client-ca", type=Path, default=None,
                       help="PEM CA bundle: mutual TLS, clients must present a certificate it signed")
    group.add_argument("--auth-token-file", type=Path, default=None,
                       help=f"require this file's token on every call but health checks (UNAUTHENTICATED "
                       f"otherwise); default: ${AUTH_TOKEN_ENV} if set, else no token")


def config_error(args: argparse.Namespace) -> str | None:
    """The first flag value that cannot work, as one line; None if all can."""
    for flag, value in (("--max-batch", args.max_batch), ("--max-concurrent", args.max_concurrent),
                        ("--max-stacks-per-request", args.max_stacks_per_request)):
        if value < 1:
            return f"{flag} must be >= 1"
    if not 0 < args.client_share <= 1:
        return "--client-share must be in (0, 1]"
    for flag, value in (("--keepalive-time", args.keepalive_time), ("--keepalive-timeout", args.keepalive_timeout)):
        if value <= 0:
            return f"{flag} must be > 0"
    for flag, value in (("--stream-idle-timeout", args.stream_idle_timeout), ("--grace", args.grace),
                        ("--max-connection-age", args.max_connection_age),
                        ("--max-connection-age-grace", args.max_connection_age_grace)):
        if value < 0:
            return f"{flag} must be >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s serve %(levelname)s %(message)s", stream=sys.stderr)
    model = args.model or default_model_path()
    if not model.is_file():
        hint = "" if args.model else f" (no --model given; set --model or ${MODEL_ENV}, or export a model there)"
        print(f"breakout-dqn serve: error: model file not found: {model}{hint}", file=sys.stderr)
        return 2
    problem = config_error(args)
    try:
        token = read_token(args.auth_token_file)
        if problem is None:  # the files are read again at start: here only to refuse a bad one before loading
            server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    except SecurityConfigError as error:
        problem = str(error)
    if problem is not None:
        print(f"breakout-dqn serve: error: {problem}", file=sys.stderr)
        return 2
    config = ServerConfig(
        model=model, host=args.host, port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
        inline_gap_ms=None if args.inline_gap_ms < 0 else args.inline_gap_ms,
        max_concurrent=args.max_concurrent, max_stacks_per_request=args.max_stacks_per_request,
        intra_op_threads=args.threads, grace_s=args.grace,
        stream_idle_timeout_s=args.stream_idle_timeout, keepalive_time_s=args.keepalive_time,
        keepalive_timeout_s=args.keepalive_timeout, client_share=args.client_share, client_key=args.client_key,
        max_connection_age_s=args.max_connection_age, max_connection_age_grace_s=args.max_connection_age_grace,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, auth_token=token,
    )
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
