"""Password guessing at both doors (``/login/`` and ``POST /api/auth/token/``): locked out per
username and per address, one lockout for both doors, throttled, logged, and bounded so that
guessing does not take the CPU from authenticated requests."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from panel import security

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "right-horse-battery"


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def victim(db):
    return User.objects.create_user("gina", password=PASSWORD)


@pytest.fixture
def no_throttle(settings):
    """Throttles off, so that a test sees axes' lockout alone."""
    settings.PADDOCK = {
        **settings.PADDOCK,
        "TOKEN_RATE_ADDRESS": "100000/min",
        "TOKEN_RATE_USERNAME": "100000/min",
    }


def login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def token(client: Client, username: str, password: str):
    return client.post(
        "/api/auth/token/",
        {"username": username, "password": password},
        content_type="application/json",
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_login_locks_out_after_repeated_failures(victim):
    client = Client()
    for _ in range(200):
        login(client, "gina", "guess")
    response = login(client, "gina", PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    assert b"locked" in response.content
    assert int(response["Retry-After"]) == 15 * 60


def test_token_endpoint_locks_out_after_repeated_failures(victim, no_throttle):
    client = Client()
    for _ in range(200):
        token(client, "gina", "guess")
    response = token(client, "gina", PASSWORD)
    assert response.status_code == 429
    assert "token" not in response.json()
    assert "locked" in response.json()["detail"]


def test_token_endpoint_is_throttled_before_any_password_check(victim):
    client = Client()
    statuses = [token(client, "gina", "guess").status_code for _ in range(200)]
    assert 429 in statuses
    assert token(client, "gina", PASSWORD).status_code == 429


def test_username_locked_at_login_form_is_locked_at_token_endpoint(victim, no_throttle):
    for _ in range(5):
        login(Client(REMOTE_ADDR="192.0.2.1"), "gina", "guess")
    # Another address: the username's own lock refuses it.
    response = token(Client(REMOTE_ADDR="198.51.100.9"), "gina", PASSWORD)
    assert response.status_code == 429


def test_username_locked_at_token_endpoint_is_locked_at_login_form(victim, no_throttle):
    for _ in range(5):
        token(Client(REMOTE_ADDR="192.0.2.1"), "gina", "guess")
    client = Client(REMOTE_ADDR="198.51.100.9")
    assert login(client, "gina", PASSWORD).status_code == 429
    assert not logged_in(client)


def test_address_guessing_many_usernames_is_locked_out(victim, no_throttle):
    User.objects.create_user("mia", password=PASSWORD)
    attacker = Client(REMOTE_ADDR="203.0.113.5")
    for name in ("a", "b", "c", "d", "e"):
        login(attacker, name, "guess")
    assert login(attacker, "mia", PASSWORD).status_code == 429
    assert token(attacker, "mia", PASSWORD).status_code == 429
    # Someone else, elsewhere, is not affected.
    other = Client(REMOTE_ADDR="198.51.100.9")
    assert login(other, "mia", PASSWORD).status_code == 302
    assert logged_in(other)


def test_a_few_failures_then_the_right_password_works(victim):
    client = Client()
    for _ in range(4):
        assert login(client, "gina", "guess").status_code == 200  # the form again, with errors
    assert login(client, "gina", PASSWORD).status_code == 302
    assert logged_in(client)
    assert token(Client(), "gina", PASSWORD).status_code == 201


def test_lockout_is_logged_on_paddock_security(victim, no_throttle, caplog):
    caplog.set_level(logging.WARNING, logger="paddock.security")
    for _ in range(6):
        login(Client(REMOTE_ADDR="192.0.2.1"), "gina", "guess")
    for _ in range(6):
        token(Client(REMOTE_ADDR="192.0.2.2"), "mia", "guess")
    lockouts = [r for r in caplog.records if r.name == "paddock.security" and "locked" in r.msg]
    messages = [r.getMessage() for r in lockouts]
    assert any("'gina'" in m and "192.0.2.1" in m and "/login/" in m for m in messages), messages
    assert any("'mia'" in m and "192.0.2.2" in m and "/api/auth/token/" in m for m in messages)


def test_throttled_token_request_is_logged(victim, caplog):
    caplog.set_level(logging.WARNING, logger="paddock.security")
    for _ in range(30):
        token(Client(), "gina", "guess")
    assert any("throttled" in r.getMessage() for r in caplog.records)


def test_password_checks_run_at_most_the_configured_number_at_once(settings, monkeypatch):
    settings.PADDOCK = {**settings.PADDOCK, "PASSWORD_CHECKS": 2, "PASSWORD_CHECK_WAIT": 10}
    monkeypatch.setattr(security, "_checks", None)
    running = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow_check():
        with security.bounded_password_check("u"):
            with lock:
                running["now"] += 1
                running["max"] = max(running["max"], running["now"])
            time.sleep(0.05)
            with lock:
                running["now"] -= 1

    threads = [threading.Thread(target=slow_check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert running["max"] == 2


def test_password_check_waiting_too_long_is_refused(victim, settings, monkeypatch):
    from django.core.exceptions import PermissionDenied

    settings.PADDOCK = {**settings.PADDOCK, "PASSWORD_CHECKS": 1, "PASSWORD_CHECK_WAIT": 0.05}
    monkeypatch.setattr(security, "_checks", None)
    semaphore = security._semaphore()
    semaphore.acquire()
    try:
        with pytest.raises(PermissionDenied):
            security.BoundedModelBackend().authenticate(None, "gina", "p")
    finally:
        semaphore.release()
