"""The VM page's live parts, server side: the Console tab (members, not viewers), the pop-out
window, the data attributes live.js updates, and the task page's live hooks."""

from __future__ import annotations

import pytest
from django.urls import reverse

from panel.choices import Role
from panel.models import Task
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def page(client, user, url: str) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.mark.parametrize("role", [Role.MEMBER, Role.OPERATOR, Role.ADMIN])
def test_console_tab_for_roles_with_the_console_right(client, make_member, tenant, acme_vm, role):
    user = make_member(tenant, role)
    html = page(client, user, reverse("ui:vm", args=[acme_vm.pk]))
    console_tab = f'href="/vms/{acme_vm.pk}/?tab=console"'
    assert console_tab in html

    html = page(client, user, reverse("ui:vm", args=[acme_vm.pk]) + "?tab=console")
    assert "data-console " in html
    assert f'data-ticket-url="/api/vms/{acme_vm.pk}/console/"' in html
    assert "vendor/novnc/core/rfb.js" in html
    assert "vendor/xterm/xterm.js" in html
    assert 'data-console-kind="serial"' in html
    assert f'href="{reverse("ui:vm_console_popout", args=[acme_vm.pk])}"' in html
    assert "js/console.js" in html
    # The "not running" message is there for the script to show.
    assert "is not running." in html


def test_serial_sub_tab_from_the_query(client, make_member, tenant, acme_vm):
    user = make_member(tenant, Role.MEMBER)
    html = page(client, user, reverse("ui:vm", args=[acme_vm.pk]) + "?tab=console&kind=serial")
    assert 'data-kind="serial"' in html


def test_viewer_has_no_console_tab(client, make_member, tenant, acme_vm):
    viewer = make_member(tenant, Role.VIEWER)
    html = page(client, viewer, reverse("ui:vm", args=[acme_vm.pk]))
    assert "?tab=console" not in html
    # Asking for the tab anyway shows the summary, not a console.
    html = page(client, viewer, reverse("ui:vm", args=[acme_vm.pk]) + "?tab=console")
    assert "data-console " not in html
    assert "data-ticket-url" not in html
    # The pop-out window is refused.
    response = client.get(reverse("ui:vm_console_popout", args=[acme_vm.pk]))
    assert response.status_code == 403


def test_popout_page_is_the_console_alone(client, make_member, tenant, acme_vm):
    user = make_member(tenant, Role.MEMBER)
    html = page(client, user, reverse("ui:vm_console_popout", args=[acme_vm.pk]) + "?kind=serial")
    assert "data-console " in html
    assert 'data-kind="serial"' in html
    assert f"<title>Console · {acme_vm.name} · Paddock</title>" in html
    # No shell around it: no tree, no task bar, no pop-out button of its own.
    assert 'id="tree"' not in html
    assert 'id="taskbar"' not in html
    assert "data-console-popout" not in html
    assert "js/live.js" in html


def test_popout_of_another_tenants_vm_is_404(client, make_member, other_tenant, acme_vm):
    stranger = make_member(other_tenant, Role.ADMIN)
    client.force_login(stranger)
    response = client.get(reverse("ui:vm_console_popout", args=[acme_vm.pk]))
    assert response.status_code == 404


def test_templates_have_no_console(client, admin_user, acme_vm):
    VirtualMachine.objects.filter(pk=acme_vm.pk).update(is_template=True, state="shutoff")
    html = page(client, admin_user, reverse("ui:vm", args=[acme_vm.pk]))
    assert "?tab=console" not in html
    response = client.get(reverse("ui:vm_console_popout", args=[acme_vm.pk]))
    assert response.status_code == 403


def test_vm_page_marks_what_live_updates_touch(client, admin_user, acme_vm, synced_host):
    html = page(client, admin_user, reverse("ui:vm", args=[acme_vm.pk]))
    assert f'data-page-vm="{acme_vm.pk}"' in html
    marker = f'data-vm-id="{acme_vm.pk}" data-vm-state="{acme_vm.state}"'
    assert html.count(marker) >= 3  # header icon, header badge, summary state
    assert "data-console-status" in html
    assert "js/live.js" in html
    # The tree's host node (loaded when the datacenter node opens) and the lazily loaded VM
    # leaves carry theirs.
    hosts = page(client, admin_user, reverse("ui:tree_hosts"))
    assert f'data-host-id="{synced_host.pk}" data-host-status="{synced_host.status}"' in hosts
    leaves = page(client, admin_user, reverse("ui:tree_host_vms", args=[synced_host.pk]))
    assert marker in leaves
    rows = page(client, admin_user, reverse("ui:vm_list"))
    assert marker in rows and "data-vm-state-label" in rows


def test_task_bar_polls_only_without_a_live_socket(client, admin_user, synced_host):
    html = page(client, admin_user, reverse("ui:datacenter"))
    assert 'data-poll="taskbar" hx-trigger="poll"' in html  # paddock.js polls while shouldPoll()


def test_task_page_has_live_hooks(client, admin_user, synced_host):
    task = Task.objects.create(kind="host.sync", state="running", progress=30, host=synced_host)
    html = page(client, admin_user, reverse("ui:task", args=[task.pk]))
    assert f'data-task-live="{task.pk}"' in html
    assert 'data-task-final="0"' in html
    assert "data-task-log" in html and "data-task-progress" in html
    assert 'data-poll="task-live"' in html  # its polling pauses while the socket streams
