"""Metric routes under /api/ (included by paddock.api_urls)."""

from django.urls import path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)

from .views import HostMetricsView, StoragePoolMetricsView, VmMetricsView

urlpatterns = [
    path("vms/<id:pk>/metrics/", VmMetricsView.as_view(), name="vm-metrics"),
    path("hosts/<id:pk>/metrics/", HostMetricsView.as_view(), name="host-metrics"),
    path(
        "storage-pools/<id:pk>/metrics/",
        StoragePoolMetricsView.as_view(),
        name="storagepool-metrics",
    ),
]
