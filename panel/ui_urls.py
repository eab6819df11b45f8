"""UI routes (filled in by the UI shell)."""

from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/api/"), name="datacenter"),
    path("hosts/<int:pk>/", RedirectView.as_view(url="/api/hosts/%(pk)s/"), name="host"),
    path("vms/<int:pk>/", RedirectView.as_view(url="/api/vms/%(pk)s/"), name="vm"),
]
