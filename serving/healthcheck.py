"""``python -m serving.healthcheck --target HOST:PORT``: exit 0 iff the server reports SERVING.

A container HEALTHCHECK / readiness probe over grpc.health.v1 (imports grpc only, so it is
cheap to run every few seconds). Exit 1 with the status or the error on one line otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_NAME = "breakout.v1.AgentService"


TARGET_ENV = "BREAKOUT_DQN_HEALTH_TARGET"  # HOST:PORT to probe
PORT_ENV = "BREAKOUT_DQN_PORT"  # else 127.0.0.1 on this port, which `serve` also reads (its default)
DEFAULT_PORT = 50051


def default_port() -> str:
    """The port `serve` binds and this probe checks by default: $BREAKOUT_DQN_PORT, unset or empty = 50051."""
    return os.environ.get(PORT_ENV) or str(DEFAULT_PORT)


def default_target() -> str:
    return os.environ.get(TARGET_ENV) or f"127.0.0.1:{default_port()}"


def check(target: str, service: str = SERVICE_NAME, timeout: float = 3.0) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``, ...); raises grpc.RpcError."""
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=False
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=default_target(),
                        help=f"HOST:PORT (default: ${TARGET_ENV}, else 127.0.0.1:${PORT_ENV}, else "
                        f"127.0.0.1:{DEFAULT_PORT}; now %(default)s)")
    parser.add_argument("--service", default=SERVICE_NAME, help="'' for the whole server (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        status = check(args.target, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"{args.target}: {error.code().name}: {error.details()}")
        return 1
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
