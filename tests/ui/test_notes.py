"""A VM's notes saved from its Summary: who may, what a too-long note answers, and the panel
rendered safely."""

from __future__ import annotations

import pytest
from django.urls import reverse

from panel.choices import Role
from tests.ui.conftest import login, text
from vms.models import VirtualMachine
from vms.services import NOTES_MAX_LENGTH

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def test_an_operator_saves_notes_and_gets_the_panel_back(client, make_member, acme_vm):
    login(client, make_member(acme_vm.tenant, Role.OPERATOR))
    url = reverse("ui:vm_notes", args=[acme_vm.pk])
    response = client.post(url, {"notes": "**hi** <script>x()</script>\r\nline"}, **HX)
    assert response.status_code == 200
    panel = text(response)
    assert '<section class="panel notes-panel" id="vm-notes">' in panel
    assert "<strong>hi</strong>" in panel and "<script>x()" not in panel
    acme_vm.refresh_from_db()
    assert acme_vm.notes == "**hi** <script>x()</script>\nline"
    # Without htmx the form goes back to the VM's page.
    response = client.post(url, {"notes": "plain"})
    assert response.status_code == 302 and response.url == acme_vm.get_absolute_url()
    assert VirtualMachine.objects.get(pk=acme_vm.pk).notes == "plain"


def test_too_long_notes_are_a_400_with_the_message_and_keep_the_old(client, make_member, acme_vm):
    VirtualMachine.objects.filter(pk=acme_vm.pk).update(notes="old")
    login(client, make_member(acme_vm.tenant, Role.OPERATOR))
    url = reverse("ui:vm_notes", args=[acme_vm.pk])
    response = client.post(url, {"notes": "x" * (NOTES_MAX_LENGTH + 1)}, **HX)
    assert response.status_code == 400
    assert f"At most {NOTES_MAX_LENGTH:,} characters" in text(response)
    assert 'aria-invalid="true"' in text(response)
    assert VirtualMachine.objects.get(pk=acme_vm.pk).notes == "old"


@pytest.mark.parametrize("role, status", [(Role.VIEWER, 403), (Role.MEMBER, 403)])
def test_roles_below_operator_may_not_edit_notes(client, make_member, acme_vm, role, status):
    login(client, make_member(acme_vm.tenant, role))
    page = text(client.get(acme_vm.get_absolute_url()))
    assert 'id="vm-notes"' in page and "Edit notes" not in page
    response = client.post(reverse("ui:vm_notes", args=[acme_vm.pk]), {"notes": "x"}, **HX)
    assert response.status_code == status
    assert VirtualMachine.objects.get(pk=acme_vm.pk).notes == ""


def test_another_tenant_does_not_find_the_vm(client, make_member, acme_vm, other_tenant):
    login(client, make_member(other_tenant, Role.ADMIN))
    response = client.post(reverse("ui:vm_notes", args=[acme_vm.pk]), {"notes": "x"}, **HX)
    assert response.status_code == 404
