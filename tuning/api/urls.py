"""API routes of tuning under /api/ (registered by paddock.api_urls)."""

from django.urls import path

from .views import (
    HostTuningView,
    SpecFitView,
    TenantTuningDefaultView,
    TuningPolicyViewSet,
    VmTuningApplyView,
    VmTuningFitView,
    VmTuningPlanView,
    VmTuningView,
)

routes = (("tuning-policies", TuningPolicyViewSet, "tuning-policy"),)

urlpatterns = [
    path("vms/<id:pk>/tuning/", VmTuningView.as_view(), name="vm-tuning"),
    path("vms/<id:pk>/tuning/fit/", VmTuningFitView.as_view(), name="vm-tuning-fit"),
    path("vms/<id:pk>/tuning/plan/", VmTuningPlanView.as_view(), name="vm-tuning-plan"),
    path("vms/<id:pk>/tuning/apply/", VmTuningApplyView.as_view(), name="vm-tuning-apply"),
    path("tuning/fit/", SpecFitView.as_view(), name="tuning-fit"),
    path("hosts/<id:pk>/tuning/", HostTuningView.as_view(), name="host-tuning"),
    path(
        "tenants/<id:pk>/tuning-default/",
        TenantTuningDefaultView.as_view(),
        name="tenant-tuning-default",
    ),
]
