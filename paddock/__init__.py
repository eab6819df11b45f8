"""Paddock's project package: settings, URLs, ASGI routing, the Celery app, the embedded runner,
the demo and the pages that span the apps (datacenter, search, tenants).

It stands on top of every app; ``panel`` (the core) and the apps never import it.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
