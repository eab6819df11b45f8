"""Websocket routes.

``/ws/events/`` carries live events (see ``docs/events.md``): the session comes from
``AuthMiddlewareStack`` in ``panel.asgi``, an API token from the ``Authorization: Token <token>``
header through ``TokenAuthMiddleware``. ``/ws/console/<vm>/<vnc|serial>/<ticket>/`` opens a
console (see ``docs/console.md``): the single-use ticket is the key.
"""

from django.urls import path

from vms.console_urls import websocket_urlpatterns as console_urlpatterns

from .consumers import EventsConsumer, TokenAuthMiddleware

websocket_urlpatterns: list = [
    path("ws/events/", TokenAuthMiddleware(EventsConsumer.as_asgi())),
    *console_urlpatterns,
]
