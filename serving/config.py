"""The serving side's defaults and the server's config, each defined once.

``serve``'s flags, the server, the servicer, the batcher, the client, ``play`` and the health
probe read them here. Standard library only: the container's health probe imports this module
every few seconds. The service's name comes from the generated descriptor
(``breakout_dqn.serving.healthcheck.SERVICE_NAME``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

HOST_ENV = "BREAKOUT_DQN_HOST"  # the images set 0.0.0.0: a container must be reachable from outside
PORT_ENV = "BREAKOUT_DQN_PORT"  # `serve` binds it and the health probe checks it
MODEL_ENV = "BREAKOUT_DQN_MODEL"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_MODEL = Path("models") / "breakout-dqn.onnx"  # in the repository root

MAX_BATCH = 64  # stacks per forward pass
MAX_DELAY_MS = 2.0  # longest a batch waits for more requests (never at concurrency 1)
INLINE_GAP_MS = 0.2  # idle time after a pass before a small request may run on the event loop
MAX_CONCURRENT = 256  # GetAction calls + open StreamActions and PlayGame streams; RESOURCE_EXHAUSTED past it
MAX_STACKS_PER_REQUEST = 256  # also sets the max message size (at least one PlayGame frame)
MESSAGE_OVERHEAD_BYTES = 1024  # protobuf framing allowed on top of the frame stacks
GRACE_S = 10.0  # seconds in-flight calls get to finish on SIGTERM
DRAIN_SETTLE_S = 0.25  # on SIGTERM, health goes NOT_SERVING at least this long before GOAWAY: clients that
#                       watch it (round_robin) stop picking this server before it stops taking calls
CLOSE_GRACE_S = 1.0  # then, with GOAWAY sent: calls being refused finish before what is left (health Watch
#                      streams) is cut

# Misbehaving and vanished clients (README, "Protecting the server").
STREAM_IDLE_TIMEOUT_S = 60.0  # a stream (StreamActions, PlayGame) with no message this long ends; 0: off
KEEPALIVE_TIME_S = 30.0  # both sides ping a quiet connection this often (server: also without calls)...
KEEPALIVE_TIMEOUT_S = 10.0  # ...and close it if the ping is not answered in time: a vanished peer goes within 40 s
MIN_PING_INTERVAL_S = 10.0  # enforcement: a client that pings more often than this (without data) gets strikes,
MAX_PING_STRIKES = 2  # and past this many strikes a GOAWAY (too_many_pings). KEEPALIVE_TIME_S must stay above it
CLIENT_SHARE = 0.25  # the part of --max-concurrent one client may hold (64 of 256 calls + streams)
STREAM_HEADROOM = 8  # HTTP/2 streams a connection may open past its share (health watches, refusals to send)
CLIENT_KEYS = ("connection", "address")  # what "one client" means: its connection, or its IP address
CLIENT_KEY = "connection"  # safe behind proxies and NAT, where many clients share one address
MAX_CONNECTION_AGE_S = 300.0  # GOAWAY after this long (gRPC adds +-10% jitter): clients reconnect and rebalance; 0: off
MAX_CONNECTION_AGE_GRACE_S = 60.0  # calls still open on an aged connection get this long, then it closes

# TLS and token authentication (both off by default; plaintext on 127.0.0.1).
AUTH_TOKEN_ENV = "BREAKOUT_DQN_AUTH_TOKEN"  # the token, for `serve` and the clients, unless a token file is given
AUTH_METADATA_KEY = "authorization"  # the client sends `authorization: Bearer <token>`
AUTH_EXEMPT_SERVICES = ("grpc.health.v1.Health",)  # probes (Docker, the kubelet) carry no token

# The client's own resilience: GetAction/GetModelInfo retried (both are pure functions of the request, so a
# retry is safe) and a StreamActions or PlayGame session reopened, with exponential backoff, when they end with one of:
RETRY_CODES = ("UNAVAILABLE", "CANCELLED")  # a draining or unreachable server; a call a stopping server had
#                                            received but not started (gRPC never retries the caller's own cancel)
LB_POLICIES = ("pick_first", "round_robin")  # gRPC's load-balancing policies a client may ask for
LB_POLICY = "pick_first"  # gRPC's own default: one connection; round_robin spreads calls over every address
RETRY_ATTEMPTS = 5  # attempts in all, the first included
RETRY_INITIAL_BACKOFF_S = 0.05
RETRY_MAX_BACKOFF_S = 1.0

CALL_TIMEOUT_S = 5.0  # the client's deadline per GetAction call
SERVING_WAIT_S = 30.0  # how long a client waits for the server to report SERVING
PROBE_TIMEOUT_S = 3.0  # the health probe's deadline (the image's HEALTHCHECK --timeout)


def default_host() -> str:
    """The interface `serve` binds: ``$BREAKOUT_DQN_HOST``, else 127.0.0.1."""
    return os.environ.get(HOST_ENV, DEFAULT_HOST)


def default_port() -> str:
    """The port `serve` binds and the probe checks by default: $BREAKOUT_DQN_PORT, unset or empty = 50051."""
    return os.environ.get(PORT_ENV) or str(DEFAULT_PORT)


def default_model_path() -> Path:
    """``$BREAKOUT_DQN_MODEL``, else ``models/breakout-dqn.onnx`` in the repository root."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return Path(__file__).resolve().parent.parent / DEFAULT_MODEL


def message_limit_bytes(max_stacks_per_request: int = MAX_STACKS_PER_REQUEST) -> int:
    """The gRPC message size limit, in bytes: requests of up to ``max_stacks_per_request`` stacks, and
    always a PlayGame frame of 4 RGB screens (403,200 bytes)."""
    from breakout_dqn import contract  # not at import: the probe needs no numpy

    game_frame = contract.MAX_SCREENS_PER_FRAME * contract.SCREEN_RGB_BYTES
    return max(max_stacks_per_request * contract.STACK_BYTES, game_frame) + MESSAGE_OVERHEAD_BYTES


@dataclasses.dataclass
class ServerConfig:
    """What one `serve` process runs with (every field is a flag of ``breakout-dqn serve``)."""

    model: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_batch: int = MAX_BATCH
    max_delay_ms: float = MAX_DELAY_MS
    inline_gap_ms: float | None = INLINE_GAP_MS  # the sequential-caller fast path (serving/batcher.py); None: off
    max_concurrent: int = MAX_CONCURRENT
    max_stacks_per_request: int = MAX_STACKS_PER_REQUEST
    intra_op_threads: int | None = None
    grace_s: float = GRACE_S
    stream_idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S  # 0: off
    keepalive_time_s: float = KEEPALIVE_TIME_S
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S
    client_share: float = CLIENT_SHARE
    client_key: str = CLIENT_KEY
    max_connection_age_s: float = MAX_CONNECTION_AGE_S  # 0: off
    max_connection_age_grace_s: float = MAX_CONNECTION_AGE_GRACE_S
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key: TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle; set: mutual TLS (clients must present a certificate it signed)
    auth_token: str | None = dataclasses.field(default=None, repr=False)  # never printed or logged

    @property
    def max_message_bytes(self) -> int:
        return message_limit_bytes(self.max_stacks_per_request)
