"""The ASGI middlewares in front of the labeling app and the Label Studio backend.

Each does one thing, in the order a request meets them (:func:`guard` stacks them):

* :class:`SecurityHeaders`: every answer, refusals included, carries the security headers
  (and ``no-store`` unless the route allows caching);
* :class:`LoopbackHost`: a ``Host`` that is not a loopback name gets 421 (a web page
  elsewhere cannot reach the server through DNS rebinding);
* :class:`RequireToken`: without the token (``?token=`` or ``X-Token``), 403;
* :class:`BodyLimit`: a body over the limit gets 413, before the app parses anything;
* :class:`RejectNonFiniteJSON`: a JSON body holding ``NaN`` or an infinity gets 400
  (Python's parser accepts them, and an answer that repeats them cannot be encoded).

Starlette's ``TrustedHostMiddleware`` is not used for the host rule: it answers 400 (not 421,
"Misdirected Request", which says what happened) and matches names only, while a loopback
server must also answer ``127.0.0.2`` and the other addresses of 127.0.0.0/8.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
from urllib.parse import parse_qs

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"same-origin"),   # no other site may embed the images
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),   # the token must not leak through Referer
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"frame-ancestors 'none'"),
]
#: Pages and API answers change all the time; images (by id) do not.
NO_STORE = (b"cache-control", b"no-store")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost).

    Parameters
    ----------
    host : str
        A host name or address, as given to ``--host``.

    Returns
    -------
    bool
        True for loopback addresses and ``localhost``.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _header(scope, name: bytes, default=None):
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return default


async def _refuse(send, status, detail):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every answer, and ``no-store`` unless it sets its own
    ``cache-control``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not any(key.lower() == b"cache-control" for key, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class LoopbackHost:
    """Refuse (421) a request whose ``Host`` header is not a loopback name (:func:`is_loopback`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_loopback(_host_name(_header(scope, b"host", ""))):
            return await _refuse(send, 421, "this server answers requests for 127.0.0.1 / localhost only")
        return await self.app(scope, receive, send)


class RequireToken:
    """Refuse (403) a request without ``token``, as ``?token=`` or the ``X-Token`` header
    (compared in constant time)."""

    def __init__(self, app, token):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            given = given or _header(scope, b"x-token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(send, 403, "a valid token is required: open the URL the server printed")
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a body over ``limit`` bytes (declared or sent), before the app reads it.

    The body is read here, up to the limit, and replayed to the app.

    Parameters
    ----------
    app : ASGI app
        The app behind it.
    limit : int
        Bytes.
    path_limits : dict, optional
        Path -> its own limit.
    """

    def __init__(self, app, limit, path_limits=None):
        self.app, self.limit, self.path_limits = app, limit, dict(path_limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.path_limits.get(scope["path"], self.limit)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(send, 413, f"request body over {limit} bytes")
        body, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > limit:
                return await _refuse(send, 413, f"request body over {limit} bytes")
        await self.app(scope, _replay(b"".join(body), receive), send)


class RejectNonFiniteJSON:
    """Refuse (400) a JSON body that holds ``NaN``, ``Infinity`` or ``-Infinity``; behind
    :class:`BodyLimit`, which replays the whole body in one message."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        is_json = _header(scope, b"content-type", "").lower().startswith("application/json")
        if scope["type"] != "http" or not is_json:
            return await self.app(scope, receive, send)
        message = await receive()
        constant = json_constant(message.get("body", b""))
        if constant is not None:
            return await _refuse(send, 400, f"the request body holds {constant}: NaN and infinities are "
                                            "not JSON numbers")
        return await self.app(scope, _replay(message.get("body", b""), receive), send)


def json_constant(body: bytes) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` if the JSON ``body`` holds one; else None
    (malformed JSON included: the app answers it).

    Examples
    --------
    >>> json_constant(b'{"x": [1, -Infinity]}'), json_constant(b'{"x": "NaN"}')
    ('-Infinity', None)
    """
    if not any(word in body for word in (b"NaN", b"Infinity")):
        return None
    found = []
    try:
        json.loads(body, parse_constant=found.append)
    except ValueError:
        return None
    return found[0] if found else None


def _replay(body, receive):
    replay = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return replay.pop() if replay else await receive()

    return replayed


def guard(app, *, token=None, loopback_only=True, max_body, path_limits=None):
    """``app`` behind the middlewares of this module, in their order.

    Parameters
    ----------
    app : ASGI app
        The FastAPI app.
    token : str, optional
        Required on every request when set (:class:`RequireToken`).
    loopback_only : bool, default=True
        Refuse requests whose ``Host`` is not a loopback name (:class:`LoopbackHost`).
    max_body : int
        Body limit (:class:`BodyLimit`).
    path_limits : dict, optional
        Path -> its own body limit.

    Returns
    -------
    ASGI app
        Ready for uvicorn or a test client.
    """
    app = BodyLimit(RejectNonFiniteJSON(app), max_body, path_limits)
    if token is not None:
        app = RequireToken(app, token)
    if loopback_only:
        app = LoopbackHost(app)
    return SecurityHeaders(app)


__all__ = ["BodyLimit", "LoopbackHost", "RejectNonFiniteJSON", "RequireToken", "SecurityHeaders", "guard",
           "is_loopback", "json_constant"]
