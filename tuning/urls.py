"""UI routes of tuning (included by the UI's URLconf, in its ``ui`` namespace).

Importing the views registers the VM's and the host's "Tuning" tabs."""

from django.urls import path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)

from . import views

urlpatterns = [
    path("tuning/policies/", views.PolicyListView.as_view(), name="tuning_policy_list"),
    path("tuning/policies/new/", views.PolicyCreateView.as_view(), name="tuning_policy_new"),
    path("tuning/policies/<id:pk>/", views.PolicyEditView.as_view(), name="tuning_policy"),
    path(
        "tuning/policies/<id:pk>/copy/", views.PolicyCopyView.as_view(), name="tuning_policy_copy"
    ),
    path(
        "tuning/policies/<id:pk>/delete/",
        views.PolicyDeleteView.as_view(),
        name="tuning_policy_delete",
    ),
    path("vms/<id:pk>/tuning/apply/", views.VmTuningApplyView.as_view(), name="vm_tuning_apply"),
    path(
        "hosts/<id:pk>/tuning/housekeeping/",
        views.HousekeepingView.as_view(),
        name="host_tuning_housekeeping",
    ),
]
