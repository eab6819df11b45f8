"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paddock.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from paddock.routing import websocket_urlpatterns  # noqa: E402
from panel.bodylimit import BodyLimitMiddleware  # noqa: E402
from panel.uploads import StreamingASGIHandler, UploadGate  # noqa: E402
from panel.wsguard import WebsocketGuard  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Bodies are capped before Django reads (and spools) them; uploads stream (bodylimit).
        "http": BodyLimitMiddleware(
            django_asgi_app, uploads=UploadGate(django_asgi_app, StreamingASGIHandler())
        ),
        "websocket": WebsocketGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
