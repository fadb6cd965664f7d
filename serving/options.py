"""``breakout-dqn serve``'s flags, generated from ``ServerConfig``'s fields, and their checks.

Each value comes from its flag, else its ``BREAKOUT_DQN_*`` variable (where the field names one),
else the field's default. A value that cannot work is a ``UsageError`` naming where it came from
(the flag or the variable), which ``serve`` prints as one line before exiting 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from breakout_dqn.errors import UsageError
from breakout_dqn.serving.config import ServerConfig

PROG = "breakout-dqn serve"
DESCRIPTION = (
    "Serve greedy Breakout actions over gRPC (breakout.v1.AgentService) from an ONNX model on onnxruntime, "
    "with dynamic batching, grpc.health.v1, server reflection, admission control, Prometheus metrics and "
    "graceful shutdown on SIGTERM (SIGHUP reloads the tokens file, the TLS files and the subjects list)."
)


def flag_of(field: dataclasses.Field) -> str | None:
    """The flag a field is set by (None: not a flag)."""
    flag = field.metadata.get("flag", "")
    if flag is None:
        return None
    return flag or "--" + field.name.replace("_", "-")


def _value_type(field: dataclasses.Field) -> type:
    """``int``, ``float``, ``str``, ``bool`` or ``Path`` (``X | None`` -> ``X``)."""
    hints = typing.get_type_hints(ServerConfig)
    hint = hints[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _help(field: dataclasses.Field) -> str:
    text = field.metadata["help"].replace("%", "%%")
    if "(default" in text:
        return text
    default = "off" if field.default is None else field.default
    env = field.metadata.get("env")
    return f"{text} (default: ${env} if set, else {default})" if env else f"{text} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    """The `serve` parser: one flag per ``ServerConfig`` field; unset flags stay absent from the namespace."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, argument_default=argparse.SUPPRESS)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(ServerConfig):
        flag = flag_of(field)
        if flag is None:
            continue
        group_name = field.metadata["group"]
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        kind = _value_type(field)
        names = [flag]
        if kind is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, dest=field.name, help=_help(field))
            continue
        converter = _converter(kind, field.name)
        group.add_argument(*names, dest=field.name, type=converter, choices=field.metadata["choices"],
                           metavar=None if field.metadata["choices"] else _metavar(kind, field.name),
                           help=_help(field))
        for alias in field.metadata["aliases"]:  # old spellings: still accepted, not shown
            group.add_argument(alias, dest=field.name, type=converter, help=argparse.SUPPRESS)
    return parser


def _metavar(kind: type, name: str) -> str:
    return {int: "N", float: "X", Path: "PATH"}.get(kind, name.upper())


def _converter(kind: type, name: str) -> Callable[[str], Any]:
    if name == "port" or name == "metrics_port":
        return port_number
    return kind


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port); argparse and the variables' checks call it."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number in 1-65535 (0: any free port)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: 1-65535 (0: any free port)")
    return port


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The config the flags (else the variables, else the defaults) describe; ``UsageError`` if a value cannot work."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in dataclasses.fields(ServerConfig):
        flag = flag_of(field)
        if flag is None:
            continue
        sources[field.name] = flag
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
            continue
        env = field.metadata.get("env")
        if env and environ.get(env, "").strip():
            sources[field.name] = f"${env}"
            values[field.name] = _from_environment(env, environ[env].strip(), _value_type(field), field.name)
    config = ServerConfig(**values)
    check(config, sources)
    return config


def _from_environment(env: str, text: str, kind: type, name: str) -> Any:
    try:
        return _converter(kind, name)(text)
    except (ValueError, argparse.ArgumentTypeError) as error:
        detail = str(error) if isinstance(error, argparse.ArgumentTypeError) else f"invalid {kind.__name__} {text!r}"
        raise UsageError(f"${env}: {detail}") from None


def check(config: ServerConfig, sources: Mapping[str, str] | None = None) -> None:
    """``UsageError`` for the first value that cannot work, named by its flag or variable."""
    sources = sources or {}

    def where(name: str) -> str:
        return sources.get(name, "--" + name.replace("_", "-"))

    at_least_one = ("max_batch", "max_in_flight", "max_stacks_per_request", "max_streams",
                    "max_streams_per_connection", "max_connections_per_client")
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise UsageError(f"{where(name)} must be >= 1, got {getattr(config, name)}")
    for name in ("client_share", "client_stream_share"):
        if not 0 < getattr(config, name) <= 1:
            raise UsageError(f"{where(name)} must be in (0, 1], got {getattr(config, name)}")
    if not 0 <= config.access_log_sample <= 1:
        raise UsageError(f"{where('access_log_sample')} must be in [0, 1], got {config.access_log_sample}")
    for name in ("keepalive_time_s", "keepalive_timeout_s", "max_queue_wait_ms"):
        if getattr(config, name) <= 0:
            raise UsageError(f"{where(name)} must be > 0, got {getattr(config, name)}")
    non_negative = ("stream_idle_timeout_s", "grace_s", "max_connection_age_s", "max_connection_age_grace_s",
                    "memory_limit_mib", "max_delay_ms")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise UsageError(f"{where(name)} must be >= 0, got {getattr(config, name)}")
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"{where('threads')} must be >= 1, got {config.threads}")
    for name in ("port", "metrics_port"):
        try:
            port_number(str(getattr(config, name)))
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"{where(name)}: {error}") from None
    if config.metrics_port and config.metrics_port == config.port:
        raise UsageError(f"{where('metrics_port')} {config.metrics_port} is the gRPC port too")
