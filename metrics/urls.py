"""Routes of the metrics app: the API views (under /api/) and the Prometheus endpoint."""

from django.urls import path

from .api.urls import urlpatterns as api_urlpatterns
from .views import prometheus

prometheus_urlpatterns = [path("metrics", prometheus, name="prometheus-metrics")]

__all__ = ["api_urlpatterns", "prometheus_urlpatterns"]
