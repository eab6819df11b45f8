"""Paddock's project package: settings, URLs, tenancy, the task log and the UI shell."""

from .celery import app as celery_app

__all__ = ["celery_app"]
