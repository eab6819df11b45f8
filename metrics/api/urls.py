"""Metric routes under /api/ (included by panel.api.urls)."""

from django.urls import path

from .views import HostMetricsView, StoragePoolMetricsView, VmMetricsView

urlpatterns = [
    path("vms/<int:pk>/metrics/", VmMetricsView.as_view(), name="vm-metrics"),
    path("hosts/<int:pk>/metrics/", HostMetricsView.as_view(), name="host-metrics"),
    path(
        "storage-pools/<int:pk>/metrics/",
        StoragePoolMetricsView.as_view(),
        name="storagepool-metrics",
    ),
]
