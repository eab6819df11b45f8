"""Websocket routes.

``/ws/events/`` carries live events (see ``docs/events.md``): the session comes from
``AuthMiddlewareStack`` in ``paddock.asgi``, an API token from the ``Authorization: Token <token>``
header through ``TokenAuthMiddleware``. ``/ws/console/<vm>/<vnc|serial>/<ticket>/`` opens a
console (see ``docs/console.md``): the single-use ticket is the key. Who may open which socket
(the Origin rule) is ``panel.wsguard``; a path matching no route is refused there too.
"""

from django.urls import path, re_path

from panel.consumers import EventsConsumer, TokenAuthMiddleware
from panel.wsguard import no_route
from vms.console_urls import websocket_urlpatterns as console_urlpatterns

websocket_urlpatterns: list = [
    path("ws/events/", TokenAuthMiddleware(EventsConsumer.as_asgi())),
    *console_urlpatterns,
    re_path(r"", no_route),
]
