"""A cap on HTTP request bodies, applied in the ASGI path before Django reads a byte.

Django's ASGI handler reads the whole body (spooling it to a temporary file) before routing,
so a limit in a view comes too late: an anonymous 1 GiB POST would fill the disk while it
lasts. ``BodyLimitMiddleware`` answers 413 at once when ``Content-Length`` exceeds
``PADDOCK_MAX_BODY_BYTES``, and stops reading and answers 413 when a chunked body passes it.
Only the upload endpoints are exempt: they go to ``uploads`` (``panel.uploads.UploadGate``),
which reads no byte of the body before a platform admin is authenticated.
"""

from __future__ import annotations

from django.conf import settings

from panel.uploads import is_upload, refuse


async def _too_large(send) -> None:
    await refuse(send, 413, "Request body too large.")


class BodyLimitMiddleware:
    def __init__(self, inner, uploads=None):
        self.inner = inner
        self.uploads = uploads or inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        if is_upload(scope.get("path", "")):
            return await self.uploads(scope, receive, send)
        limit = settings.PADDOCK["MAX_BODY_BYTES"]
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    return await _too_large(send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            return await self.inner(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send)


class _BodyTooLarge(Exception):
    pass
