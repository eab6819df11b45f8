"""Who may open a websocket: one Origin rule for the events and console sockets.

* A console socket (``/ws/console/...``) carries a single-use ticket: the ticket is the
  credential, whatever the Origin.
* A connection with an ``Authorization`` header is an API client (a browser cannot set that
  header on a websocket): the token decides, and no Origin is needed.
* Anything else rides on the session cookie, which a browser sends to this host name whatever
  page opened the socket. It needs an ``Origin`` equal to the panel's own origin (scheme, host
  and port of the handshake, the host being in ``ALLOWED_HOSTS``) or one configured in
  ``PADDOCK_ORIGINS`` / ``CSRF_TRUSTED_ORIGINS`` (for a proxy that changes them). Another web
  app on the same host name but another port is a different origin and is refused.

A refused handshake is closed before it is accepted (the client sees HTTP 403). A path that
matches no route is closed the same way, without an error.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger("paddock.security")

TICKET_PREFIX = "/ws/console/"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(value: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or ``None`` when it is not one."""
    try:
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def header(scope, name: bytes) -> str | None:
    """A request header of an ASGI scope, decoded, or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _is_secure(scope) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, expected = proxy
        header = name.lower().removeprefix("http_").replace("_", "-").encode()
        return header(scope, header) == expected
    return False


def own_origin(scope) -> tuple[str, str, int] | None:
    """The panel's origin as this handshake reached it, if its Host is an allowed one."""
    host = header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if _is_secure(scope) else "http"
    return _origin_tuple(f"{scheme}://{host}")


def trusted_origins() -> set[tuple[str, str, int]]:
    configured = [*getattr(settings, "PADDOCK_ORIGINS", []), *settings.CSRF_TRUSTED_ORIGINS]
    return {origin for value in configured if (origin := _origin_tuple(value)) is not None}


def origin_allowed(scope) -> bool:
    """Whether a session-cookie handshake comes from the panel's own pages."""
    origin = header(scope, b"origin")
    if not origin:
        return False
    given = _origin_tuple(origin)
    if given is None:
        return False
    return given == own_origin(scope) or given in trusted_origins()


async def _refuse(receive, send) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


class WebsocketGuard:
    """ASGI middleware in front of the websocket routes: applies the Origin rule."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if not path.startswith(TICKET_PREFIX) and header(scope, b"authorization") is None:
            if not origin_allowed(scope):
                logger.info(
                    "websocket %s refused: Origin %r is not the panel's",
                    path,
                    header(scope, b"origin"),
                )
                return await _refuse(receive, send)
        return await self.inner(scope, receive, send)


async def no_route(scope, receive, send) -> None:
    """The last websocket route: a path nothing else matched is refused, not an error."""
    await _refuse(receive, send)
