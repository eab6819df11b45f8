"""Websocket routes of the VM consoles; ``paddock.routing`` includes them.

``/ws/console/<vm id>/<vnc|serial>/<ticket>/`` — the URL that ``POST /api/vms/{id}/console/``
answers; the ticket opens it once.
"""

from django.urls import re_path

from .consumers import SerialConsoleConsumer, VncConsoleConsumer

_TICKET = r"(?P<ticket>[A-Za-z0-9_-]{20,64})"

websocket_urlpatterns = [
    re_path(rf"^ws/console/(?P<vm_id>[0-9]{{1,18}})/vnc/{_TICKET}/$", VncConsoleConsumer.as_asgi()),
    re_path(
        rf"^ws/console/(?P<vm_id>[0-9]{{1,18}})/serial/{_TICKET}/$",
        SerialConsoleConsumer.as_asgi(),
    ),
]
