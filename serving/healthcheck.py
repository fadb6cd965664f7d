"""``python -m breakout_dqn.serving.healthcheck --server HOST:PORT``: exit 0 iff the server reports SERVING.

A container HEALTHCHECK / readiness probe over grpc.health.v1 (imports grpc and the generated
descriptor only, no numpy or onnxruntime, so it is cheap to run every few seconds). Exit 1 with
the status or the error on one line otherwise; exit 2 for unusable TLS or token settings.
``--target`` is the old spelling of ``--server``, still accepted.

Against a server with TLS, pass ``--tls-ca`` (and ``--tls-server-name`` when the certificate does
not name 127.0.0.1; ``--tls-cert/--tls-key`` under mutual TLS). The health service needs no token.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breakout.v1 import agent_pb2
from breakout_dqn.errors import ExitCode
from breakout_dqn.serving.config import DEFAULT_HOST, DEFAULT_PORT, PORT_ENV, PROBE_TIMEOUT_S, default_port
from breakout_dqn.serving.security import (
    ClientSecurity,
    SecurityConfigError,
    add_client_flags,
    client_security_from_args,
)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
"""``breakout.v1.AgentService``, as the .proto names it: what the server registers, reports health
for and lists in reflection, and what the client and this probe ask about."""

TARGET_ENV = "BREAKOUT_DQN_HEALTH_TARGET"  # HOST:PORT to probe; else DEFAULT_HOST on `serve`'s default port


def default_target() -> str:
    return os.environ.get(TARGET_ENV) or f"{DEFAULT_HOST}:{default_port()}"


def check(target: str, service: str = SERVICE_NAME, timeout: float = PROBE_TIMEOUT_S,
          security: ClientSecurity | None = None) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``, ...); raises grpc.RpcError."""
    with (security or ClientSecurity()).channel(target, []) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=False
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m breakout_dqn.serving.healthcheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=default_target(),
                        help=f"HOST:PORT (default: ${TARGET_ENV}, else {DEFAULT_HOST}:${PORT_ENV}, else "
                        f"{DEFAULT_HOST}:{DEFAULT_PORT}; now %(default)s)")
    parser.add_argument("--target", dest="server", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--service", default=SERVICE_NAME, help="'' for the whole server (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_S, help="seconds (default: %(default)s)")
    add_client_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        security = client_security_from_args(args)
    except SecurityConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    try:
        status = check(args.server, args.service, args.timeout, security)
    except grpc.RpcError as error:
        print(f"{args.server}: {error.code().name}: {error.details()}")
        return int(ExitCode.FAILURE)
    print(f"{args.server}: {status}")
    return int(ExitCode.OK if status == "SERVING" else ExitCode.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
