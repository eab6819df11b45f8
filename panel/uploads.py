"""Volume uploads in the ASGI path: who may send a body is decided before a byte of it is read.

The upload endpoints are the only ones exempt from the body cap (``panel.bodylimit``). For
them:

* ``UploadGate`` authenticates the request from its headers alone (an API token, or the
  session cookie) and lets only an active platform admin through; anyone else is answered
  401/403 without the body being read;
* the API endpoint (``POST /api/storage-pools/{id}/upload/``) is then served by
  ``StreamingASGIHandler``: Django's handler, except that the body is not read (and spooled to
  a temporary file) up front but handed to the view as a stream that reads the socket as the
  view consumes it. The view checks the name, the format and ``Content-Length`` against the
  pool's free space first, then copies the stream to the host chunk by chunk;
* the UI's no-script form fallback goes through Django's usual handler (multipart needs the
  parser), past the same gate.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from importlib import import_module

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from panel.models import ApiToken
from panel.wsguard import header

API_UPLOAD = re.compile(r"^/api/storage-pools/[0-9]{1,18}/upload/$")
UI_UPLOAD = re.compile(r"^/pools/[0-9]{1,18}/volumes/upload/$")


def is_upload(path: str) -> bool:
    return bool(API_UPLOAD.match(path) or UI_UPLOAD.match(path))


class ReceiveStream(io.RawIOBase):
    """The request body, read from the ASGI connection only as the view asks for it.

    The view runs in a worker thread; each read waits for the next ``http.request`` message on
    the event loop. A client that disconnects mid-body ends the stream early, which the
    upload sees as a short body and refuses.
    """

    def __init__(self, receive):
        self._receive = async_to_sync(receive)
        self._buffer = b""
        self._more = True

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buffer and self._more:
            message = self._receive()
            if message["type"] == "http.disconnect":
                self._more = False
                return
            self._buffer = message.get("body", b"")
            self._more = message.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while True:
                self._fill()
                if not self._buffer:
                    return b"".join(chunks)
                chunks.append(self._buffer)
                self._buffer = b""
        self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class StreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler with the body left on the socket for the view to stream."""

    async def read_body(self, receive):
        return ReceiveStream(receive)

    async def listen_for_disconnect(self, receive):
        # The view owns ``receive`` while it reads the body; a disconnect ends its stream.
        await asyncio.Future()


def uploader(scope):
    """The user the request's headers authenticate (an API token or the session), or None."""
    auth = header(scope, b"authorization")
    if auth:
        kind, _, raw = auth.partition(" ")
        if kind.lower() not in ("token", "bearer") or not raw.strip():
            return None
        token = ApiToken.lookup(raw.strip())
        return token.user if token else None
    key = parse_cookie(header(scope, b"cookie") or "").get(settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = get_user(request)
    return user if user.is_authenticated else None


async def refuse(send, status: int, detail: str) -> None:
    """Answer with a JSON error and close, whatever of the body is still unread."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UploadGate:
    """In front of the upload endpoints: only a platform admin's request gets its body read."""

    def __init__(self, django_app, streaming_app):
        self.django_app = django_app
        self.streaming_app = streaming_app

    async def __call__(self, scope, receive, send):
        if scope.get("method") == "POST":
            user = await sync_to_async(uploader, thread_sensitive=True)(scope)
            if user is None:
                detail = "Authentication credentials were not provided or are not valid."
                return await refuse(send, 401, detail)
            if not (user.is_active and user.is_superuser):
                return await refuse(send, 403, "Only platform admins upload volumes.")
        if API_UPLOAD.match(scope.get("path", "")):
            return await self.streaming_app(scope, receive, send)
        return await self.django_app(scope, receive, send)
