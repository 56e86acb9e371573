"""Who may use para-mcp over HTTP: requests with its bearer token (`Authorization: Bearer TOKEN`).

A loopback port is open to every user of the host, and whoever gets through runs
commands as the user running para-mcp; the token is what tells that user's
clients from the others. It comes from, in order:

- `--token-file FILE`: its first line; refused if group or others may read or
  change the file (a shared secret only its user may see);
- the environment variable PARA_MCP_TOKEN (taken out of the environment, so that
  tasks, which get para-mcp's environment, do not see it);
- else a new random one, written to `RUNTIME_DIR/mcp-token-PORT` (mode 0600) and
  removed on exit: stderr names the file.

The token itself is never logged, and a request without it gets 401 before it reaches the SDK.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN_ENV = "PARA_MCP_TOKEN"
MIN_LENGTH = 16   # a short token on a port every local user reaches could be guessed
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
class TokenError(ValueError):
    """No token para-mcp may serve with; the message says what to give instead (exit 2, as a usage error)."""


_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe())'"


@dataclass(frozen=True)
class Token:
    """A bearer token and where a client finds it (said on stderr and in every 401, never the token)."""
    value: str
    where: str


def given_token(token_file: str | None) -> Token | None:
    """The token of --token-file, else of PARA_MCP_TOKEN (removed from the environment either way);
    None if neither gives one. TokenError for a token file others may read, or a weak token."""
    from_env = os.environ.pop(TOKEN_ENV, None)
    if token_file is not None:
        return Token(_checked(_read_private(token_file), f"--token-file {token_file}"), f"the first line of {token_file}")
    if from_env is not None:
        return Token(_checked(from_env.strip(), TOKEN_ENV), f"the {TOKEN_ENV} para-mcp was started with")
    return None


def _read_private(path: str) -> str:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise TokenError(f"--token-file {path}: other users may read or change it (mode "
                                 f"{stat.S_IMODE(mode):04o}); make it yours alone: chmod 600 {path}")
            data = f.read(4096)
    except OSError as exc:
        raise TokenError(f"--token-file {path}: {exc.strerror}; name a file holding the token") from None
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[0].strip() if lines else ""


def _checked(token: str, source: str) -> str:
    if len(token) < MIN_LENGTH or not _HEADER_SAFE.fullmatch(token):
        raise TokenError(f"{source}: a token is at least {MIN_LENGTH} printable ASCII characters with no spaces; "
                         f"make one with {_MAKE_ONE}")
    return token


@contextlib.contextmanager
def generated_token(runtime_dir: Path, port: int) -> Iterator[Token]:
    """A new random token in RUNTIME_DIR/mcp-token-PORT, readable by this user only, removed on exit."""
    path = runtime_dir / f"mcp-token-{port}"
    value = secrets.token_urlsafe(32)
    try:
        path.unlink(missing_ok=True)   # left by a para-mcp that was killed: the port is ours now
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise TokenError(f"cannot write the token file {path}: {exc.strerror}; give a token with --token-file "
                         f"or {TOKEN_ENV}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        yield Token(value, f"the contents of {path}")
    finally:
        path.unlink(missing_ok=True)


class BearerAuth:
    """ASGI middleware: HTTP requests without `Authorization: Bearer TOKEN` get 401 and reach nothing else."""

    def __init__(self, app: Any, token: Token) -> None:
        self.app, self.expected = app, token.value.encode()
        self.refusal = json.dumps({"error": "unauthorized", "error_description":
                                   f"para-mcp wants the header 'Authorization: Bearer TOKEN'; TOKEN is {token.where}"}
                                  ).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or self._admitted(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(self.refusal)).encode()),
                (b"www-authenticate", b'Bearer realm="para-mcp"')]})
            await send({"type": "http.response.body", "body": self.refusal})
        else:   # a websocket: para-mcp serves none, and this one has no token anyway
            await send({"type": "websocket.close", "code": 1008})

    def _admitted(self, scope: dict[str, Any]) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.expected)
        return False
