"""TLS and token authentication, for the server and its clients (both off by default).

What the server and its clients share: reading and checking PEM files and tokens. The server's own
side (reloadable TLS credentials, the tokens file, identities) is ``serving/credentials.py``. Clients:
``ClientSecurity`` (trusted CA, client certificate, server name, token) and the flags ``play`` and
the health probe share.

Every file is read and checked when the process starts; a bad one is a ``SecurityConfigError`` with
a one-line message (``serve``, ``play`` and the probe print it and exit 2). A token is never
printed or logged: messages name the file or the variable it came from.
Standard library and grpc only: the health probe imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from breakout_dqn.errors import UsageError
from breakout_dqn.serving.config import AUTH_METADATA_KEY, AUTH_TOKEN_ENV


class SecurityConfigError(UsageError, ValueError):
    """A TLS or token setting that cannot work (one line, names the flag and the file); exit 2."""


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


def read_token(token_file: Path | None, flag: str = "--auth-token-file", min_chars: int = 1) -> str | None:
    """The token from ``token_file``, else from ``$BREAKOUT_DQN_AUTH_TOKEN``, else None (no authentication).

    Fails closed: a variable that is set but blank, or a token shorter than ``min_chars``, is an error,
    never "no token".
    """
    if token_file is not None:
        token, source = read_file(flag, token_file).decode("utf-8", "replace").strip(), f"{flag} {token_file}"
    elif AUTH_TOKEN_ENV in os.environ:
        token, source = os.environ[AUTH_TOKEN_ENV].strip(), f"${AUTH_TOKEN_ENV}"
        if not token:
            raise SecurityConfigError(f"${AUTH_TOKEN_ENV} is set but blank: set a token, or unset it to run "
                                      "without one")
    else:
        return None
    check_token(token, source, min_chars)
    return token


def check_token(token: str, source: str, min_chars: int = 1) -> None:
    """``SecurityConfigError`` unless ``token`` can travel as a metadata value and has ``min_chars`` characters."""
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise SecurityConfigError(f"the token in {source} must be printable ASCII without spaces (a metadata value)")
    if len(token) < min_chars:
        raise SecurityConfigError(f"the token in {source} has {len(token)} characters; a server takes at least "
                                  f"{min_chars} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")


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


def load_pair(flag: str, cert: Path, key: Path) -> tuple[bytes, bytes]:
    """A certificate chain and its private key, checked to belong together."""
    chain = read_pem(f"{flag}-cert", cert, "certificate")
    private_key = read_pem(f"{flag}-key", key, "private key")
    _check_pem(f"{flag}-cert/{flag}-key", lambda context: context.load_cert_chain(cert, key))
    return chain, private_key


def load_ca(flag: str, path: Path) -> bytes:
    roots = read_pem(flag, path, "certificate")
    _check_pem(flag, lambda context: context.load_verify_locations(cafile=path))
    return roots


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
    ca = None if args.tls_ca is None else load_ca("--tls-ca", args.tls_ca)
    cert = key = None
    if args.tls_cert is not None:
        cert, key = load_pair("--tls", args.tls_cert, args.tls_key)
    return ClientSecurity(tls=tls, ca=ca, cert=cert, key=key, server_name=args.tls_server_name,
                          token=read_token(args.auth_token_file))
