"""The server's credentials: TLS (reloadable), tokens and who each client is.

Who a client is, first match wins: the name its token has in ``--tokens-file`` (``NAME TOKEN``
lines), else its certificate's subject under mutual TLS, else nobody (``admission.py`` then counts
it by connection or address). One shared token (``--auth-token-file`` or the variable) only
authenticates: every holder is anonymous. Tokens are compared in constant time (by their SHA-256,
looked up in a table); a token is never logged, only the file it came from.

SIGHUP reloads the tokens file, the subjects allow-list and the TLS files (new handshakes use the
new certificate; open connections keep theirs). A file that fails to load keeps the old settings
and logs why. A private file (key, tokens) readable by other users is logged as a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from breakout_dqn.serving.admission import Refused
from breakout_dqn.serving.config import AUTH_METADATA_KEY, MIN_TOKEN_CHARS, ServerConfig
from breakout_dqn.serving.security import SecurityConfigError, check_token, load_ca, load_pair, read_file, read_token

log = logging.getLogger("breakout_dqn.serve")

UNAUTHENTICATED = f"missing or wrong token: send metadata '{AUTH_METADATA_KEY}: Bearer <token>'"


def readable_by_others(path: Path) -> bool:
    """Whether users other than the owner may read ``path`` (group or other read bit)."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def warn_if_readable(flag: str, path: Path | None) -> None:
    if path is not None and readable_by_others(path):
        mode = stat.S_IMODE(path.stat().st_mode)
        log.warning("%s %s is readable by other users (mode %o): chmod 600 it", flag, path, mode)


def read_tokens_file(path: Path, flag: str = "--tokens-file") -> dict[str, str]:
    """``NAME TOKEN`` lines (``#`` comments, blank lines skipped) -> {name: token}; ``SecurityConfigError`` if bad."""
    text = read_file(flag, path).decode("utf-8", "replace")
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{flag} {path}:{number}"
        if len(parts) != 2:
            raise SecurityConfigError(f"{where}: expected 'NAME TOKEN', got {len(parts)} fields")
        name, token = parts
        if not name.isprintable() or len(name) > 64:
            raise SecurityConfigError(f"{where}: a NAME is at most 64 printable characters")
        check_token(token, where, MIN_TOKEN_CHARS)
        if name in tokens:
            raise SecurityConfigError(f"{where}: the name {name!r} appears twice")
        if token in tokens.values():
            raise SecurityConfigError(f"{where}: this token is already another name's")
        tokens[name] = token
    if not tokens:
        raise SecurityConfigError(f"{flag}: {path} holds no 'NAME TOKEN' line")
    return tokens


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class TokenTable:
    """Which ``authorization`` values are accepted, and the name each carries (None: a shared token)."""

    def __init__(self, tokens: dict[str | None, str]):
        self._names = {_digest(f"Bearer {token}".encode()): name for name, token in tokens.items()}

    def identify(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[bool, str | None]:
        """``(authenticated, name)`` for a call's metadata."""
        for key, value in metadata or ():
            if key == AUTH_METADATA_KEY:
                given = _digest(value if isinstance(value, bytes) else value.encode())
                for digest, name in self._names.items():
                    if hmac.compare_digest(given, digest):
                        return True, name
                return False, None
        return False, None


def load_tokens(config: ServerConfig) -> TokenTable | None:
    """The tokens the config names (a tokens file, and/or one shared token); None: no authentication."""
    tokens: dict[str | None, str] = {}
    if config.tokens_file is not None:
        tokens.update(read_tokens_file(config.tokens_file))
    if config.auth_token is not None:
        tokens[None] = config.auth_token
    return TokenTable(tokens) if tokens else None


def read_server_token(config: ServerConfig) -> str | None:
    """The shared token (``--auth-token-file``, else the variable), at least ``MIN_TOKEN_CHARS`` long."""
    return read_token(config.auth_token_file, min_chars=MIN_TOKEN_CHARS)


def read_subjects(path: Path, flag: str = "--tls-client-subjects") -> frozenset[str]:
    """One certificate subject a line (``CN=game-1``; as gRPC reports it), ``#`` comments skipped."""
    lines = read_file(flag, path).decode("utf-8", "replace").splitlines()
    subjects = frozenset(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
    if not subjects:
        raise SecurityConfigError(f"{flag}: {path} lists no subject")
    return subjects


def _certificate_config(config: ServerConfig) -> grpc.ServerCertificateConfiguration:
    assert config.tls_cert is not None and config.tls_key is not None
    chain, private_key = load_pair("--tls", config.tls_cert, config.tls_key)
    roots = None if config.tls_client_ca is None else load_ca("--tls-client-ca", config.tls_client_ca)
    return grpc.ssl_server_certificate_configuration([(private_key, chain)], root_certificates=roots)


def check_tls_settings(config: ServerConfig) -> None:
    """``SecurityConfigError`` for TLS flags that cannot work together, or files that do not load."""
    if config.tls_cert is None and config.tls_key is None:
        if config.tls_client_ca is not None:
            raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)")
        if config.tls_client_subjects is not None:
            raise SecurityConfigError("--tls-client-subjects needs --tls-client-ca (subjects come from client "
                                      "certificates)")
        return
    if config.tls_cert is None or config.tls_key is None:
        given, missing = ("--tls-key", "--tls-cert") if config.tls_cert is None else ("--tls-cert", "--tls-key")
        raise SecurityConfigError(f"{given} needs {missing}: TLS takes a certificate chain and its private key")
    if config.tls_client_subjects is not None and config.tls_client_ca is None:
        raise SecurityConfigError("--tls-client-subjects needs --tls-client-ca (subjects come from client "
                                  "certificates)")
    _certificate_config(config)
    if config.tls_client_subjects is not None:
        read_subjects(config.tls_client_subjects)


@dataclasses.dataclass
class Identity:
    authenticated: bool
    name: str | None


class Credentials:
    """The server's TLS credentials, tokens and subjects allow-list, reloaded together by ``reload``."""

    def __init__(self, config: ServerConfig):
        check_tls_settings(config)
        self.config = config
        self.tokens = load_tokens(config)
        self.subjects = None if config.tls_client_subjects is None else read_subjects(config.tls_client_subjects)
        self.mutual = config.tls_client_ca is not None
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()
        self.server_credentials: grpc.ServerCredentials | None = None
        if config.tls_cert is not None:
            self.server_credentials = grpc.dynamic_ssl_server_credentials(
                _certificate_config(config), self._next_certificate_config, require_client_authentication=self.mutual)
        for flag, path in (("--tls-key", config.tls_key), ("--tokens-file", config.tokens_file),
                           ("--auth-token-file", config.auth_token_file)):
            warn_if_readable(flag, path)

    def _next_certificate_config(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake (on its own thread): a reloaded configuration, once."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        """Read the tokens file, the subjects list and the TLS files again (SIGHUP); keep the old ones on error."""
        config = self.config
        steps: list[tuple[str, Callable[[], None]]] = []
        if config.tokens_file is not None or config.auth_token_file is not None:
            steps.append(("tokens", self._reload_tokens))
        if config.tls_client_subjects is not None:
            steps.append(("client subjects", lambda: setattr(self, "subjects", read_subjects(
                config.tls_client_subjects))))  # type: ignore[arg-type]
        if config.tls_cert is not None:
            steps.append(("TLS certificate", self._reload_certificate))
        for what, step in steps:
            try:
                step()
                log.info("reloaded the %s", what)
            except SecurityConfigError as error:
                log.error("kept the old %s: %s", what, error)

    def _reload_tokens(self) -> None:
        token = read_server_token(self.config) if self.config.auth_token_file is not None else self.config.auth_token
        self.tokens = load_tokens(dataclasses.replace(self.config, auth_token=token))
        self.config.auth_token = token

    def _reload_certificate(self) -> None:
        loaded = _certificate_config(self.config)
        with self._lock:
            self._pending = loaded

    def identify(self, metadata: Callable[[], Sequence[tuple[str, str | bytes]] | None],
                 auth_context: Callable[[], dict[str, list[bytes]]], exempt: bool) -> str | None:
        """The caller's name (None: anonymous); ``Refused`` when it must authenticate and does not.

        ``metadata`` and ``auth_context`` are the call's (functions: read only when needed)."""
        subject = None
        if self.mutual:
            values = auth_context().get("x509_subject") or [b""]
            subject = values[0].decode("utf-8", "replace") or None
            if self.subjects is not None and subject not in self.subjects and not exempt:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, "permission_denied",
                              "this client certificate's subject is not allowed on this server")
        name = None
        if self.tokens is not None and not exempt:
            authenticated, name = self.tokens.identify(metadata())
            if not authenticated:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", UNAUTHENTICATED)
        return name or subject
