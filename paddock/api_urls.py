"""All API routes under /api/."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from hosts.api import urls as host_urls
from metrics.api.urls import urlpatterns as metrics_urlpatterns
from panel.api.views import (
    ApiTokenViewSet,
    HealthView,
    MembershipViewSet,
    TagColourView,
    TaskViewSet,
    TenantViewSet,
    TokenObtainView,
    UserViewSet,
    WhoAmIView,
)
from tuning.api import urls as tuning_urls
from vms.api import urls as vm_urls


class IdRouter(DefaultRouter):
    """Routes with path converters: a detail route takes only an id that can exist (``<id:pk>``,
    so ``/api/vms/99999999999999999999/`` is a 404, never an overflow in the database), unless a
    viewset names its own converter."""

    # No ".json" suffix routes: ?format=json chooses the renderer.
    include_format_suffixes = False

    def __init__(self):
        super().__init__(use_regex_path=False)

    def get_lookup_regex(self, viewset, lookup_prefix=""):
        if getattr(viewset, "lookup_value_converter", None) is None:
            lookup = getattr(viewset, "lookup_url_kwarg", None) or viewset.lookup_field
            return f"<id:{lookup_prefix}{lookup}>"
        return super().get_lookup_regex(viewset, lookup_prefix)


router = IdRouter()
for prefix, viewset, basename in (*host_urls.routes, *vm_urls.routes, *tuning_urls.routes):
    router.register(prefix, viewset, basename=basename)
router.register("tasks", TaskViewSet, basename="task")
router.register("tenants", TenantViewSet, basename="tenant")
router.register("users", UserViewSet, basename="user")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path("auth/token/", TokenObtainView.as_view(), name="auth-token"),
    path("auth/whoami/", WhoAmIView.as_view(), name="auth-whoami"),
    path("health/", HealthView.as_view(), name="health"),
    path("tag-colours/", TagColourView.as_view(), name="tag-colours"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    *metrics_urlpatterns,
    *host_urls.urlpatterns,
    *vm_urls.urlpatterns,
    *tuning_urls.urlpatterns,
    path("", include(router.urls)),
]
