"""The VM grid page's bulk bar without a browser: the same service as the API, its answer the
group's result (alone for grid.js, above the list otherwise)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from panel.models import Task
from vms.choices import VMState
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def _vms(host):
    vms = VirtualMachine.objects.filter(host=host, is_template=False).order_by("name")
    return list(vms.filter(state=VMState.SHUTOFF)[:2]), vms.filter(state=VMState.RUNNING).first()


def test_bulk_form_answers_the_group_in_place(client, admin_user, synced_host):
    stopped, running = _vms(synced_host)
    client.force_login(admin_user)
    response = client.post(
        reverse("ui:vm_bulk"),
        {"action": "start", "ids": [stopped[0].pk, stopped[1].pk, running.pk]},
        headers={"X-Requested-With": "paddock-grid"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "2 tasks queued, 1 refused" in html and "<html" not in html
    assert f'data-bulk-refused="{running.pk}"' in html and "Cannot start" in html
    assert Task.objects.filter(kind="vm.power").count() == 2


def test_bulk_form_without_javascript_shows_the_list_with_the_result(
    client, admin_user, synced_host
):
    stopped, _running = _vms(synced_host)
    client.force_login(admin_user)
    url = reverse("ui:vm_bulk") + "?state=shutoff&ordering=name"
    response = client.post(url, {"action": "stop", "ids": [stopped[0].pk]})
    assert response.status_code == 200
    html = response.content.decode()
    assert "0 tasks queued, 1 refused" in html and "Cannot stop a VM that is shut off" in html
    assert "No virtual machines match" not in html  # the list is there, filtered as before


def test_bulk_form_bad_action_is_a_message_not_a_500(client, admin_user, synced_host):
    client.force_login(admin_user)
    response = client.post(
        reverse("ui:vm_bulk"), {"action": "explode", "ids": ["1"]},
        headers={"X-Requested-With": "paddock-grid"},
    )  # fmt: skip
    assert response.status_code == 400 and b"One of start" in response.content
    assert client.get(reverse("ui:vm_bulk")).status_code == 405
