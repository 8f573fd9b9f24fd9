"""The optional access token (``web.token``) and the headers every response carries.

With a token configured, every request — API, pages, stream, ``/metrics`` — must present it:
``Authorization: Bearer TOKEN``, or ``?token=TOKEN``, or the cookie that ``?token=`` sets (so a
browser needs the token once; EventSource cannot send headers, the cookie rides along). A page
opened with ``?token=`` is redirected to the same address without it, so the token does not stay
in the address bar or the history. Otherwise: 401 with a JSON body. Tokens are compared in
constant time. The cookie is HttpOnly and SameSite=Strict: another site cannot make a browser use
it (no cross-site POST/DELETE with the operator's credentials).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "flowscope_token"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# Pages: scripts, styles and images from this server only (no inline script, no eval).
PAGE_POLICY = (b"content-security-policy",
               b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class SecurityHeaders:
    """Adds nosniff, no-referrer, DENY framing and (outside /api and /metrics) a strict CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        extra = list(SECURITY_HEADERS)
        if not (path.startswith("/api/") or path == "/metrics"):
            extra.append(PAGE_POLICY)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def unauthorized() -> Response:
    body = {"error": "unauthorized",
            "message": "an access token is required: send 'Authorization: Bearer TOKEN', or open the page once "
                       "with ?token=TOKEN"}
    return Response(json.dumps(body), status_code=401, media_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="flowscope"', "Cache-Control": "no-store"})


def _cookie(token: str) -> bytes:
    return f"{COOKIE}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")


class TokenAuth:
    """Requires ``token`` on every HTTP request (does nothing when the token is empty)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, candidates: Iterable[str | None]) -> bool:
        return any(c is not None and hmac.compare_digest(c.encode(), self.token) for c in candidates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" else None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = [value for name, value in query if name == "token"]
        cookie = _read_cookie(headers.get("cookie", ""))
        if self._matches([bearer, cookie]):
            await self.app(scope, receive, send)
            return
        if not from_query or not self._matches(from_query[:1]):
            await unauthorized()(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if scope.get("method") == "GET" and not (path.startswith("/api/") or path == "/metrics"):
            raw_path = scope.get("raw_path") or path.encode()
            location = "/" + raw_path.decode("latin-1").lstrip("/")  # never "//host": no open redirect
            rest = [(name, value) for name, value in query if name != "token"]
            if rest:
                location += "?" + urlencode(rest)
            response = Response(status_code=303, headers={"Location": location, "Cache-Control": "no-store"})
            response.raw_headers.append((b"set-cookie", _cookie(self.token.decode())))
            await response(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", _cookie(self.token.decode()))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _read_cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, separator, value = part.strip().partition("=")
        if separator and name == COOKIE:
            return unquote(value)
    return None
