"""WSGI entry point (management tools; the panel itself is served over ASGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paddock.settings")
application = get_wsgi_application()
