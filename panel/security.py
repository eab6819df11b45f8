"""Brute-force protection for the two doors that take a password: ``/login/`` and
``POST /api/auth/token/``.

* One lockout truth for both doors: django-axes (``axes.backends.AxesStandaloneBackend`` first
  in ``AUTHENTICATION_BACKENDS``) counts failed ``authenticate()`` calls per username and per
  client address and refuses a locked one before any password is hashed. Both views call
  ``authenticate()`` with the Django request, so a username locked at one door is locked at
  the other. Every lockout is logged on ``paddock.security``.
* The token endpoint is also rate-limited before the view runs (DRF throttles per address and
  per username, :class:`TokenAddressThrottle`, :class:`TokenUsernameThrottle`).
* A password check is a deliberately slow hash; :class:`BoundedModelBackend` runs at most
  ``PADDOCK_PASSWORD_CHECKS`` of them at once in a process, so a flood of wrong passwords
  queues behind each other instead of taking every CPU from token- and session-authenticated
  requests (which never hash a password).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from contextlib import contextmanager

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger("paddock.security")

LOCKED_MESSAGE = "Too many failed log-in attempts: this account or address is locked for a while."
BUSY_MESSAGE = "Too many log-in attempts at once: try again in a moment."


# --- lockout: logged, and answered -------------------------------------------------------------


def log_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    path = getattr(request, "path", "")
    logger.warning("login locked out: username=%r address=%s path=%s", username, ip_address, path)


def _connect_lockout_log() -> None:
    user_locked_out.connect(log_lockout, dispatch_uid="paddock.security.lockout")


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """axes' answer to a locked attempt (``AXES_LOCKOUT_CALLABLE``): 429 at both doors, JSON for
    the API, the login page with the reason for the form."""
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": LOCKED_MESSAGE}, status=429)
    else:
        form = AuthenticationForm(request, data=request.POST or None)
        response = render(
            request,
            "auth/login.html",
            {"form": form, "locked_message": LOCKED_MESSAGE, "next": request.POST.get("next", "")},
            status=429,
        )
    cooloff = getattr(settings, "AXES_COOLOFF_TIME", None)
    if cooloff is not None:
        response["Retry-After"] = str(int(cooloff.total_seconds()))
    return response


# --- bounded password checks -------------------------------------------------------------------

_checks: threading.BoundedSemaphore | None = None
_checks_lock = threading.Lock()


def _semaphore() -> threading.BoundedSemaphore:
    global _checks
    with _checks_lock:
        if _checks is None:
            _checks = threading.BoundedSemaphore(settings.PADDOCK["PASSWORD_CHECKS"])
        return _checks


@contextmanager
def bounded_password_check(username: str):
    """At most ``PASSWORD_CHECKS`` password hashes at once; ``PermissionDenied`` after waiting
    ``PASSWORD_CHECK_WAIT`` seconds.

    The database connection is handed back first (to the pool, on PostgreSQL): an attempt
    waiting here or hashing must not hold one of the few connections the requests that are
    not guessing passwords need.
    """
    if not connection.in_atomic_block:
        connection.close()
    semaphore = _semaphore()
    if not semaphore.acquire(timeout=settings.PADDOCK["PASSWORD_CHECK_WAIT"]):
        logger.warning("password check for %r refused: too many at once", username)
        raise PermissionDenied(BUSY_MESSAGE)
    try:
        yield
    finally:
        semaphore.release()


class BoundedModelBackend(ModelBackend):
    """Django's username/password backend, hashing inside :func:`bounded_password_check`.

    An attempt refused there is a failed log-in, which axes counts like any other. An unknown
    username costs one hash too, as in Django, so that timing does not tell it apart.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            with bounded_password_check(username):
                user_model().set_password(password)
            return None
        with bounded_password_check(username):
            valid = user.check_password(password)
        if valid and self.user_can_authenticate(user):
            return user
        return None


# --- token endpoint throttles ------------------------------------------------------------------


class _TokenThrottle(SimpleRateThrottle):
    """Rates read from ``settings.PADDOCK`` when used, so they follow the configuration."""

    setting = ""

    def get_rate(self):
        return settings.PADDOCK[self.setting]

    def allow_request(self, request, view):
        allowed = super().allow_request(request, view)
        if not allowed:
            logger.warning(
                "token requests throttled (%s): key=%s", self.scope, self.key and self.key[-80:]
            )
        return allowed


class TokenAddressThrottle(_TokenThrottle):
    scope = "token-address"
    setting = "TOKEN_RATE_ADDRESS"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenUsernameThrottle(_TokenThrottle):
    scope = "token-username"
    setting = "TOKEN_RATE_USERNAME"

    def get_cache_key(self, request, view):
        try:
            username = request.data.get("username")
        except Exception:  # an unparsable body is the view's 400, not this throttle's
            return None
        if not isinstance(username, str) or not username:
            return None
        # Hashed: a username may hold characters a cache key may not.
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}
