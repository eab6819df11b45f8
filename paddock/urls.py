"""Top-level URLs: the UI shell, the API, login."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from metrics.urls import prometheus_urlpatterns

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="auth/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include(("paddock.api_urls", "api"), namespace="api")),
    *prometheus_urlpatterns,
    path("", include(("paddock.ui_urls", "ui"), namespace="ui")),
]
