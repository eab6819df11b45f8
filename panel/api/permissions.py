"""API permission classes."""

from rest_framework.permissions import BasePermission

from panel.tenancy import is_platform_admin


class IsPlatformAdmin(BasePermission):
    message = "Only platform admins manage hosts, storage and networks."

    def has_permission(self, request, view):
        return is_platform_admin(request.user)
