"""Template context shared by every page of the UI shell."""

from __future__ import annotations

from .tenancy import is_platform_admin


def shell(request) -> dict:
    user = getattr(request, "user", None)
    return {"is_platform_admin": is_platform_admin(user)}
