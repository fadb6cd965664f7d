"""The serving side's defaults and the server's config, each defined once.

``ServerConfig`` is the one place a `serve` setting and its default live: ``breakout-dqn serve``'s
flags are generated from its fields (``serving/options.py``), and the server, the servicer, the
batcher and the admission control read the resolved object. The constants below are what the
clients (``AgentClient``, ``play``, the health probe) share with it. Standard library only: the
container's health probe imports this module every few seconds. The service's name comes from
the generated descriptor (``breakout_dqn.serving.healthcheck.SERVICE_NAME``).
Where each default was measured: docs/guides/serving.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

HOST_ENV = "BREAKOUT_DQN_HOST"  # the images set 0.0.0.0: a container must be reachable from outside
PORT_ENV = "BREAKOUT_DQN_PORT"  # `serve` binds it and the health probe checks it
MODEL_ENV = "BREAKOUT_DQN_MODEL"
METRICS_PORT_ENV = "BREAKOUT_DQN_METRICS_PORT"  # the Prometheus endpoint; the Kubernetes manifests set 9090
AUTH_TOKEN_ENV = "BREAKOUT_DQN_AUTH_TOKEN"  # the token, for `serve` and the clients, unless a token file is given

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_MODEL = Path("models") / "breakout-dqn.onnx"  # in the repository root
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

MAX_STACKS_PER_REQUEST = 64  # also sets the max message size (at least one PlayGame frame)
MESSAGE_OVERHEAD_BYTES = 1024  # protobuf framing allowed on top of the frame stacks
DRAIN_SETTLE_S = 0.25  # on SIGTERM, health goes NOT_SERVING at least this long before GOAWAY: clients that
#                       watch it (round_robin) stop picking this server before it stops taking calls
CLOSE_GRACE_S = 1.0  # then, with GOAWAY sent: calls being refused finish before what is left (health Watch
#                      streams) is cut

# Misbehaving and vanished clients (docs/guides/serving.md, "Limits").
KEEPALIVE_TIME_S = 30.0  # both sides ping a quiet connection this often (server: also without calls)...
KEEPALIVE_TIMEOUT_S = 10.0  # ...and close it if the ping is not answered in time: a vanished peer goes within 40 s
MIN_PING_INTERVAL_S = 10.0  # enforcement: a client that pings more often than this (without data) gets strikes,
MAX_PING_STRIKES = 2  # and past this many strikes a GOAWAY (too_many_pings). KEEPALIVE_TIME_S must stay above it
# HTTP/2 bytes a stream may send ahead of the server reading them: one 2-screen PlayGame frame (201,600 bytes)
# arrives without waiting for a window update (docs/guides/serving.md, "Memory per connection").
STREAM_WINDOW_BYTES = 256 * 1024
WATCHES_PER_CONNECTION = 4  # health Watch streams one connection may hold (a round_robin channel needs one)
CLIENT_KEYS = ("connection", "address")  # what one anonymous client is: its connection, or its IP address (/64)
MEMORY_LIMIT_SHARE = 0.8  # the default memory ceiling: this part of the container's limit (else of the machine's RAM)
MIN_TOKEN_CHARS = 16  # a shorter token is refused at start
LOG_LINES_PER_INTERVAL = 5  # repeated log lines (refusals, errors) of one kind: at most this many...
LOG_INTERVAL_S = 10.0  # ...per this many seconds, then one line counting the ones left out

# TLS and token authentication (both off by default; plaintext on 127.0.0.1).
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


def default_model_path() -> Path:
    """``$BREAKOUT_DQN_MODEL``, else ``models/breakout-dqn.onnx`` in the repository root."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return Path(__file__).resolve().parent.parent / DEFAULT_MODEL


def default_port() -> str:
    """The port the health probe checks by default: ``$BREAKOUT_DQN_PORT``, unset or empty = 50051."""
    return os.environ.get(PORT_ENV) or str(DEFAULT_PORT)


def message_limit_bytes(max_stacks_per_request: int = MAX_STACKS_PER_REQUEST) -> int:
    """The gRPC message size limit, in bytes: requests of up to ``max_stacks_per_request`` stacks, and
    always a PlayGame frame of 4 RGB screens (403,200 bytes)."""
    from breakout_dqn import contract  # not at import: the probe needs no numpy

    game_frame = contract.MAX_SCREENS_PER_FRAME * contract.SCREEN_RGB_BYTES
    return max(max_stacks_per_request * contract.STACK_BYTES, game_frame) + MESSAGE_OVERHEAD_BYTES


def setting(default: Any, help_text: str, *, flag: str | None = "", env: str | None = None,
            choices: tuple[str, ...] | None = None, group: str = "serving", aliases: tuple[str, ...] = ()) -> Any:
    """A ``ServerConfig`` field that is a `serve` flag: its default, help, and where else it may come from.

    ``flag``: the flag's name ('' = from the field's name; None = not a flag); ``env``: a variable that
    overrides the default; ``aliases``: old spellings kept as hidden flags.
    """
    metadata = {"help": help_text, "flag": flag, "env": env, "choices": choices, "group": group, "aliases": aliases}
    return dataclasses.field(default=default, metadata=metadata)


PROTECTION = "limits: budgets, shares and timeouts against misbehaving clients"
SECURITY = "TLS, tokens and client identity"
OBSERVE = "metrics and logs"


@dataclasses.dataclass
class ServerConfig:
    """What one `serve` process runs with; each field with a ``flag`` is a flag of ``breakout-dqn serve``."""

    model: Path | None = setting(None, f"ONNX model (default: ${MODEL_ENV}, else {DEFAULT_MODEL} in the repository)",
                                 env=MODEL_ENV)
    host: str = setting(DEFAULT_HOST, "interface to bind, 0.0.0.0 for all", env=HOST_ENV)
    port: int = setting(DEFAULT_PORT, "TCP port, 1-65535; 0 picks any free port (tests use it)", env=PORT_ENV)
    max_batch: int = setting(64, "stacks per forward pass")
    max_delay_ms: float = setting(2.0, "longest a batch waits to grow as large as the previous one; sequential "
                                  "callers never wait")
    inline_gap_ms: float = setting(0.2, "a request of at most 4 stacks that finds the server idle this long after "
                                   "its last forward pass runs on the event loop (the sequential game client's fast "
                                   "path); negative turns it off")
    max_stacks_per_request: int = setting(MAX_STACKS_PER_REQUEST, "stacks one GetAction or StreamActions request "
                                          "may carry; also sets the max message size")
    threads: int | None = setting(None, "onnxruntime intra-op threads (default: min(2, cores))")
    grace_s: float = setting(10.0, "seconds in-flight calls get to finish on SIGTERM", flag="--grace")
    # Work in flight: requests being answered plus queued for the batcher.
    max_in_flight: int = setting(256, "requests (GetAction calls, stream messages) being answered or queued before "
                                 "RESOURCE_EXHAUSTED", group=PROTECTION, aliases=("--max-concurrent",))
    client_share: float = setting(0.25, "part of --max-in-flight one client may hold", group=PROTECTION)
    max_queue_wait_ms: float = setting(1000.0, "a request that would wait longer than this for its forward pass is "
                                       "refused at once (RESOURCE_EXHAUSTED, overloaded)", group=PROTECTION)
    # Open streams and sessions: StreamActions, PlayGame, health Watch and reflection streams.
    max_streams: int = setting(10_000, "open StreamActions, PlayGame, health Watch and reflection streams in all; "
                               "GetAction calls are admitted past it", group=PROTECTION)
    client_stream_share: float = setting(0.25, "part of --max-streams one client may hold", group=PROTECTION)
    max_streams_per_connection: int = setting(100, "HTTP/2 streams (calls) one connection may have open; more wait "
                                              "in the client", group=PROTECTION)
    max_connections_per_client: int = setting(64, "connections with open calls one named client (token, certificate "
                                              "or, with --client-key address, an address) may hold", group=PROTECTION)
    stream_idle_timeout_s: float = setting(60.0, "seconds a stream may go without a message (or a unary call without "
                                           "its request) before it ends with DEADLINE_EXCEEDED; 0: never",
                                           flag="--stream-idle-timeout", group=PROTECTION)
    memory_limit_mib: int = setting(0, f"resident memory past which new calls and streams are refused; 0: "
                                    f"{MEMORY_LIMIT_SHARE:g} of the container's memory limit, else of the machine's",
                                    group=PROTECTION)
    client_key: str = setting("connection", "what one anonymous client is: a connection, or an IP address (an IPv6 "
                              "/64; every client behind a NAT shares one)", choices=CLIENT_KEYS, group=PROTECTION)
    keepalive_time_s: float = setting(KEEPALIVE_TIME_S, "seconds of quiet before the server pings a connection",
                                      flag="--keepalive-time", group=PROTECTION)
    keepalive_timeout_s: float = setting(KEEPALIVE_TIMEOUT_S, "seconds an unanswered ping waits before the "
                                         "connection is closed", flag="--keepalive-timeout", group=PROTECTION)
    max_connection_age_s: float = setting(300.0, "seconds (+-10% jitter) after which a connection is asked to close "
                                          "(GOAWAY), so clients spread over replicas; 0: never",
                                          flag="--max-connection-age", group=PROTECTION)
    max_connection_age_grace_s: float = setting(60.0, "seconds the calls still open on such a connection get",
                                                flag="--max-connection-age-grace", group=PROTECTION)
    tls_cert: Path | None = setting(None, "PEM certificate chain: serve over TLS (reloaded on SIGHUP)", group=SECURITY)
    tls_key: Path | None = setting(None, "the certificate's PEM private key", group=SECURITY)
    tls_client_ca: Path | None = setting(None, "PEM CA bundle: mutual TLS, clients must present a certificate it "
                                         "signed", group=SECURITY)
    tls_client_subjects: Path | None = setting(None, "file of allowed client certificate subjects, one a line (e.g. "
                                               "CN=game-1); others get PERMISSION_DENIED", group=SECURITY)
    auth_token_file: Path | None = setting(None, f"require this file's token on every call but health checks "
                                           f"(default: ${AUTH_TOKEN_ENV} if set)", group=SECURITY)
    tokens_file: Path | None = setting(None, "file of 'NAME TOKEN' lines: each client's own token; NAME is its "
                                       "identity in shares, logs and metrics (reloaded on SIGHUP)", group=SECURITY)
    reflection: bool = setting(True, "serve gRPC server reflection (token required when tokens are)", group=SECURITY)
    metrics_port: int = setting(0, "serve Prometheus metrics at http://HOST:PORT/metrics; 0: off", env=METRICS_PORT_ENV,
                                group=OBSERVE)
    access_log_sample: float = setting(0.01, "part of the answered calls written to the access log (refusals and "
                                       "errors always, at most 5 lines per kind per 10 s)", group=OBSERVE)
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), group=OBSERVE)
    auth_token: str | None = dataclasses.field(default=None, repr=False, metadata={"flag": None})  # never logged

    @property
    def max_message_bytes(self) -> int:
        return message_limit_bytes(self.max_stacks_per_request)

    @property
    def inline_gap_s(self) -> float | None:
        """The batcher's fast-path gap in seconds; None when turned off (a negative ``inline_gap_ms``)."""
        return None if self.inline_gap_ms < 0 else self.inline_gap_ms / 1000

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS
