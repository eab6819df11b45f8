"""``/metrics`` names every tenant's VMs: it is closed unless a scrape token, an admin's API token
or a configured address allow-list opens it."""

from __future__ import annotations

import pytest
from django.test import Client

from panel.choices import Role
from panel.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def paddock(settings):
    def configure(**values):
        settings.PADDOCK = {**settings.PADDOCK, **values}

    return configure


def test_metrics_from_loopback_without_token_is_refused_by_default():
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"paddock_" not in response.content


def test_metrics_scrape_token_opens_it(paddock):
    paddock(METRICS_TOKEN="s3cret-scrape-token")
    response = Client(REMOTE_ADDR="192.0.2.7").get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("given", ["wrong", "s3cret-scrape-toke", "s3cret-scrape-token2"])
def test_metrics_with_wrong_scrape_token_is_refused(paddock, given):
    paddock(METRICS_TOKEN="s3cret-scrape-token")
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {given}")
    assert response.status_code == 401


def test_metrics_bearer_is_refused_when_no_scrape_token_is_configured(paddock):
    paddock(METRICS_TOKEN="")
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer x").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_allow_list_applies_only_when_configured(paddock):
    paddock(METRICS_ALLOW="10.1.0.0/16")
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 401


def test_metrics_admin_api_token_opens_it_and_tenant_admin_token_does_not(
    admin_user, tenant, make_member
):
    admin_token = ApiToken.issue(user=admin_user, name="prom")[1]
    member_token = ApiToken.issue(user=make_member(tenant, Role.ADMIN), name="prom")[1]
    remote = Client(REMOTE_ADDR="192.0.2.7")
    assert remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {admin_token}").status_code == 200
    assert remote.get("/metrics", HTTP_AUTHORIZATION=f"Token {member_token}").status_code == 403
