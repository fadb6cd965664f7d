"""TLS and token authentication, for the server and its clients (both off by default).

Server: ``server_credentials`` (TLS, or mutual TLS with a client CA) and ``TokenAuth``, an
interceptor that answers UNAUTHENTICATED unless a call carries ``authorization: Bearer <token>``;
the health service is exempt, so probes (Docker's HEALTHCHECK, the kubelet, a client's own health
checks under ``round_robin``) need no token. Clients: ``ClientSecurity`` (trusted CA, client
certificate, server name, token) and the flags ``play`` and the health probe share.

Every file is read and checked when the process starts; a bad one is a ``SecurityConfigError`` with
a one-line message (``serve``, ``play`` and the probe print it and exit 2). A token is never
printed or logged: messages name the file or the variable it came from.
Standard library and grpc only: the health probe imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from breakout_dqn.serving.config import AUTH_EXEMPT_SERVICES, AUTH_METADATA_KEY, AUTH_TOKEN_ENV


class SecurityConfigError(ValueError):
    """A TLS or token setting that cannot work (one line, names the flag and the file)."""


def read_file(flag: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"{flag}: cannot read {path}: {error.strerror or error}") from None
    if not data.strip():
        raise SecurityConfigError(f"{flag}: {path} is empty")
    return data


_PEM_MARKERS = {"certificate": b"-----BEGIN CERTIFICATE-----", "private key": b"PRIVATE KEY-----"}


def read_pem(flag: str, path: Path, kind: str) -> bytes:
    """The file's bytes, if it holds a PEM ``kind`` (``certificate`` or ``private key``)."""
    data = read_file(flag, path)
    if _PEM_MARKERS[kind] not in data:
        raise SecurityConfigError(f"{flag}: {path} holds no PEM {kind}")
    return data


def read_token(token_file: Path | None, flag: str = "--auth-token-file") -> str | None:
    """The token from ``token_file``, else from ``$BREAKOUT_DQN_AUTH_TOKEN``, else None (no authentication)."""
    if token_file is not None:
        token, source = read_file(flag, token_file).decode("utf-8", "replace").strip(), f"{flag} {token_file}"
    elif os.environ.get(AUTH_TOKEN_ENV, "").strip():
        token, source = os.environ[AUTH_TOKEN_ENV].strip(), f"${AUTH_TOKEN_ENV}"
    else:
        return None
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise SecurityConfigError(f"the token in {source} must be printable ASCII without spaces (a metadata value)")
    return token


def _check_pem(flag: str, load: Callable[[ssl.SSLContext], None]) -> None:
    """Let OpenSSL parse the files now, so a bad one stops the process instead of every handshake."""
    try:
        load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise SecurityConfigError(f"{flag}: the private key is not the certificate's") from None
        raise SecurityConfigError(f"{flag}: {error.reason or error}") from None
    except ValueError as error:
        raise SecurityConfigError(f"{flag}: {error}") from None


def _load_pair(flag: str, cert: Path, key: Path) -> tuple[bytes, bytes]:
    """A certificate chain and its private key, checked to belong together."""
    chain = read_pem(f"{flag}-cert", cert, "certificate")
    private_key = read_pem(f"{flag}-key", key, "private key")
    _check_pem(f"{flag}-cert/{flag}-key", lambda context: context.load_cert_chain(cert, key))
    return chain, private_key


def _load_ca(flag: str, path: Path) -> bytes:
    roots = read_pem(flag, path, "certificate")
    _check_pem(flag, lambda context: context.load_verify_locations(cafile=path))
    return roots


def server_credentials(cert: Path | None, key: Path | None, client_ca: Path | None) -> grpc.ServerCredentials | None:
    """TLS credentials for ``serve --tls-cert --tls-key [--tls-client-ca]``; None for plaintext."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)")
        return None
    if cert is None or key is None:
        given, missing = ("--tls-key", "--tls-cert") if cert is None else ("--tls-cert", "--tls-key")
        raise SecurityConfigError(f"{given} needs {missing}: TLS takes a certificate chain and its private key")
    chain, private_key = _load_pair("--tls", cert, key)
    roots = None if client_ca is None else _load_ca("--tls-client-ca", client_ca)
    return grpc.ssl_server_credentials([(private_key, chain)], root_certificates=roots,
                                       require_client_auth=roots is not None)


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class TokenAuth(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for a call without ``authorization: Bearer <token>`` (the health service is exempt).

    Checked once per call or stream, before its handler runs; compared in constant time.
    """

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()
        self._exempt = tuple(f"/{service}/" for service in AUTH_EXEMPT_SERVICES)

    def allows(self, method: str, metadata: Any) -> bool:
        if method.startswith(self._exempt):
            return True
        for key, value in metadata or ():
            if key == AUTH_METADATA_KEY:
                given = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or self.allows(details.method, details.invocation_metadata):
            return handler
        return _refusing(handler)


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        f"missing or wrong token: send metadata '{AUTH_METADATA_KEY}: Bearer <token>'")


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_refuse, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_refuse, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_refuse, **codecs)
    return grpc.stream_stream_rpc_method_handler(_refuse, **codecs)


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a server: plaintext (default), TLS, mutual TLS; a token or none.

    ``tls`` without ``ca`` trusts the system's roots; ``server_name`` overrides the name checked
    against the server's certificate (e.g. probing 127.0.0.1 when the certificate names a DNS name).
    """

    tls: bool = False
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)

    def channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        """A synchronous channel to ``target`` with these settings."""
        if not self.tls:
            return grpc.insecure_channel(target, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                                   certificate_chain=self.cert)
        if self.server_name:
            options = [*options, ("grpc.ssl_target_name_override", self.server_name)]
        return grpc.secure_channel(target, credentials, options=options)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The per-call metadata that carries the token (None without one)."""
        return ((AUTH_METADATA_KEY, f"Bearer {self.token}"),) if self.token else None


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """The TLS and token flags of ``play`` and the health probe."""
    group = parser.add_argument_group("TLS and authentication (default: plaintext, no token)")
    group.add_argument("--tls", action="store_true", help="connect over TLS, trusting the system's CAs")
    group.add_argument("--tls-ca", type=Path, default=None, help="PEM CA bundle to trust instead (implies --tls)")
    group.add_argument("--tls-cert", type=Path, default=None,
                       help="PEM client certificate chain, for a server with --tls-client-ca (implies --tls)")
    group.add_argument("--tls-key", type=Path, default=None, help="the client certificate's PEM private key")
    group.add_argument("--tls-server-name", default=None,
                       help="name to check the server's certificate against, when the target's host is not in it")
    group.add_argument("--auth-token-file", type=Path, default=None,
                       help=f"file holding the server's token (default: ${AUTH_TOKEN_ENV} if set, else no token)")


def client_security_from_args(args: argparse.Namespace) -> ClientSecurity:
    """Read and check the files ``add_client_flags``' flags name; SecurityConfigError if one is unusable."""
    if (args.tls_cert is None) != (args.tls_key is None):
        given, missing = ("--tls-key", "--tls-cert") if args.tls_cert is None else ("--tls-cert", "--tls-key")
        raise SecurityConfigError(f"{given} needs {missing}: a client certificate comes with its private key")
    tls = bool(args.tls or args.tls_ca or args.tls_cert or args.tls_server_name)
    ca = None if args.tls_ca is None else _load_ca("--tls-ca", args.tls_ca)
    cert = key = None
    if args.tls_cert is not None:
        cert, key = _load_pair("--tls", args.tls_cert, args.tls_key)
    return ClientSecurity(tls=tls, ca=ca, cert=cert, key=key, server_name=args.tls_server_name,
                          token=read_token(args.auth_token_file))
