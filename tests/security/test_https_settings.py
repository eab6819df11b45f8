"""Served over HTTPS (PADDOCK_HTTPS=1 or a proxy's header): Secure cookies and HSTS; the plain
HTTP demo keeps working with neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import json; from django.conf import settings as s; import django; django.setup(); "
    "print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
    "getattr(s, 'SECURE_PROXY_SSL_HEADER', None)]))"
)


def _settings_with(tmp_path, **env) -> list:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PADDOCK_")}
    base.pop("DATABASE_URL", None)
    base.update(
        DJANGO_SETTINGS_MODULE="paddock.settings",
        PADDOCK_DEMO="1",
        PADDOCK_DATA_DIR=str(tmp_path),
        **env,
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=base, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plain_http_demo_has_no_secure_cookies_or_hsts(tmp_path):
    assert _settings_with(tmp_path) == [False, False, 0, None]


def test_https_setting_makes_cookies_secure_and_sends_hsts(tmp_path):
    assert _settings_with(tmp_path, PADDOCK_HTTPS="1") == [True, True, 31536000, None]


def test_proxy_header_means_served_over_https(tmp_path):
    result = _settings_with(tmp_path, PADDOCK_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert result == [True, True, 31536000, ["HTTP_X_FORWARDED_PROTO", "https"]]


@pytest.mark.django_db
def test_secure_request_gets_hsts_header(settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    response = Client().get("/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in Client().get("/login/")
