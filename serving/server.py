"""``breakout-dqn serve``: the gRPC server's lifecycle (grpc.aio, one event loop).

Start: bind (127.0.0.1 by default), health NOT_SERVING, load the ONNX model and check its
contract (a mismatch stops the server with a clear error, exit 2), warm up, health SERVING.
Serve: AgentService (dynamic batching), grpc.health.v1 and server reflection, a max message
size and a concurrency limit. SIGTERM/SIGINT: health NOT_SERVING, refuse new calls, finish
the in-flight ones within ``--grace`` seconds, exit 0.
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
from serving.config import (
    DEFAULT_HOST,
    DEFAULT_MODEL,
    DEFAULT_PORT,
    GRACE_S,
    HOST_ENV,
    INLINE_GAP_MS,
    MAX_BATCH,
    MAX_CONCURRENT,
    MAX_DELAY_MS,
    MAX_STACKS_PER_REQUEST,
    MODEL_ENV,
    PORT_ENV,
    ServerConfig,
    default_host,
    default_model_path,
    default_port,
)
from serving.healthcheck import SERVICE_NAME
from serving.service import AgentServicer, Policy, ServiceLimits

log = logging.getLogger("breakout_dqn.serve")


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
            ServiceLimits(config.max_concurrent, config.max_stacks_per_request),
            max_batch=config.max_batch,
            max_delay_s=config.max_delay_ms / 1000,
            inline_gap_s=None if config.inline_gap_ms is None else config.inline_gap_ms / 1000,
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start answering (health NOT_SERVING until ``load``); return the port."""
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
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
            self.port = server.add_insecure_port(address)
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

        Long-lived calls (health Watch streams, StreamActions streams waiting for their next
        request) are cut once the requests being answered are done, so an open stream does not
        hold the shutdown for the whole grace period; a stream whose request arrives while the
        server drains gets UNAVAILABLE.
        """
        grace = self.config.grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        self.servicer.draining = True
        idle = await self.servicer.wait_idle(grace)
        if not idle:
            log.warning("grace period over with %d requests being answered", self.servicer.in_flight)
        if self._server is not None:
            await self._server.stop(0 if idle else None)
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
    except OSError as error:
        print(f"breakout-dqn serve: error: {error}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.request_stop)
    log.info("listening on %s:%d (health NOT_SERVING while the model loads)", config.host, port)
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


def parse_args(argv: list[str]) -> argparse.Namespace:
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
                        help="GetAction calls plus open StreamActions streams before RESOURCE_EXHAUSTED "
                        "(default %(default)s)")
    parser.add_argument("--max-stacks-per-request", type=int, default=MAX_STACKS_PER_REQUEST,
                        help="also sets the max message size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: min(2, cores))")
    parser.add_argument("--grace", type=float, default=GRACE_S,
                        help="seconds in-flight calls get to finish on SIGTERM (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s serve %(levelname)s %(message)s", stream=sys.stderr)
    model = args.model or default_model_path()
    if not model.is_file():
        hint = "" if args.model else f" (no --model given; set --model or ${MODEL_ENV}, or export a model there)"
        print(f"breakout-dqn serve: error: model file not found: {model}{hint}", file=sys.stderr)
        return 2
    for flag, value in (("--max-batch", args.max_batch), ("--max-concurrent", args.max_concurrent),
                        ("--max-stacks-per-request", args.max_stacks_per_request)):
        if value < 1:
            print(f"breakout-dqn serve: error: {flag} must be >= 1", file=sys.stderr)
            return 2
    config = ServerConfig(
        model=model, host=args.host, port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
        inline_gap_ms=None if args.inline_gap_ms < 0 else args.inline_gap_ms,
        max_concurrent=args.max_concurrent, max_stacks_per_request=args.max_stacks_per_request,
        intra_op_threads=args.threads, grace_s=args.grace,
    )
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
