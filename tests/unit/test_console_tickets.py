"""Console tickets: single use, short life, bound to one user, VM and kind; who gets one."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404
from django.utils import timezone
from rest_framework.test import APIClient

from hosts.driver import console as driver_console
from hosts.driver.connection import HostConnectError
from hosts.models import Host
from panel.choices import Role
from panel.models import Membership
from vms import console
from vms.console_models import ConsoleTicket
from vms.models import VirtualMachine


@pytest.fixture
def host(db):
    return Host.objects.create(name="hv1", uri="test:///default")


@pytest.fixture
def vm(host, tenant):
    return VirtualMachine.objects.create(host=host, tenant=tenant, name="web", uuid=uuid.uuid4())


@pytest.fixture
def other_vm(host, tenant):
    return VirtualMachine.objects.create(host=host, tenant=tenant, name="db", uuid=uuid.uuid4())


@pytest.fixture
def member(tenant, make_member):
    return make_member(tenant, Role.MEMBER)


def _redeem(issued, **kwargs):
    kwargs.setdefault("vm_id", issued.vm_id)
    kwargs.setdefault("kind", issued.kind)
    return console.redeem_ticket(issued.ticket, **kwargs)


def _refused(issued, **kwargs) -> int:
    with pytest.raises(console.TicketRefused) as info:
        _redeem(issued, **kwargs)
    return info.value.code


# --- lifecycle --------------------------------------------------------------------------------


def test_a_ticket_names_its_websocket_and_expires_within_30_seconds(member, vm):
    before = timezone.now()
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    assert issued.url == f"/ws/console/{vm.pk}/vnc/{issued.ticket}/"
    assert len(issued.ticket) >= 40
    assert before < issued.expires <= timezone.now() + timedelta(seconds=30)
    row = ConsoleTicket.objects.get()
    assert (row.user, row.vm, row.kind) == (member, vm, "vnc")
    assert row.token_hash != issued.ticket and issued.ticket not in row.token_hash  # only a hash


def test_a_ticket_opens_once(member, vm):
    issued = console.issue_ticket(user=member, vm=vm, kind="serial")
    ticket = _redeem(issued, user=member)
    assert (ticket.user, ticket.vm, ticket.kind) == (member, vm, "serial")
    assert ticket.vm.host.name == "hv1"
    assert _refused(issued, user=member) == console.CLOSE_NOT_FOUND


def test_a_ticket_expires(member, vm):
    now = timezone.now()
    late = console.issue_ticket(user=member, vm=vm, kind="vnc", now=now)
    assert _refused(late, now=now + timedelta(seconds=31)) == console.CLOSE_NOT_FOUND
    in_time = console.issue_ticket(user=member, vm=vm, kind="vnc", now=now)
    assert _redeem(in_time, now=now + timedelta(seconds=29)).used_at is not None


def test_a_configured_life_is_capped_at_30_seconds(settings, member, vm):
    settings.PADDOCK = {**settings.PADDOCK, "CONSOLE_TICKET_SECONDS": 3600}
    now = timezone.now()
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc", now=now)
    assert issued.expires == now + timedelta(seconds=30)
    settings.PADDOCK = {**settings.PADDOCK, "CONSOLE_TICKET_SECONDS": 5}
    short = console.issue_ticket(user=member, vm=vm, kind="vnc", now=now)
    assert _refused(short, now=now + timedelta(seconds=6)) == console.CLOSE_NOT_FOUND


def test_unknown_and_malformed_tickets_are_refused(vm):
    for token in ("", "short", "x" * 43, "../../etc/passwd" + "a" * 30, None):
        with pytest.raises(console.TicketRefused) as info:
            console.redeem_ticket(token, vm_id=vm.pk, kind="vnc")
        assert info.value.code == console.CLOSE_NOT_FOUND


# --- bound to the VM, the kind and the user ----------------------------------------------------


def test_a_ticket_for_one_vm_does_not_open_another_and_is_burnt(member, vm, other_vm):
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    assert _refused(issued, vm_id=other_vm.pk) == console.CLOSE_NOT_FOUND
    assert _refused(issued) == console.CLOSE_NOT_FOUND  # the misuse used it up
    assert ConsoleTicket.objects.get().closed_at is not None


def test_a_ticket_for_one_kind_does_not_open_the_other(member, vm):
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    assert _refused(issued, kind="serial") == console.CLOSE_NOT_FOUND


def test_another_logged_in_user_cannot_use_a_ticket(member, vm, tenant, make_member):
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    other = make_member(tenant, Role.OPERATOR)
    assert _refused(issued, user=other) == console.CLOSE_FORBIDDEN


def test_without_a_session_the_ticket_alone_opens_the_console(member, vm):
    from django.contrib.auth.models import AnonymousUser

    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    assert _redeem(issued, user=AnonymousUser()).user == member


def test_a_role_lost_after_the_ticket_was_issued_is_refused(member, vm):
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    Membership.objects.filter(user=member).update(role=Role.VIEWER)
    member.__dict__.pop("_paddock_roles", None)
    assert _refused(issued, user=member) == console.CLOSE_FORBIDDEN


def test_a_deactivated_user_is_refused(member, vm):
    issued = console.issue_ticket(user=member, vm=vm, kind="vnc")
    member.is_active = False
    member.save()
    assert _refused(issued) == console.CLOSE_FORBIDDEN


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_uses_let_exactly_one_through(tenant, make_member, host):
    vm = VirtualMachine.objects.create(host=host, tenant=tenant, name="race", uuid=uuid.uuid4())
    user = make_member(tenant, Role.MEMBER)
    for _round in range(3):
        issued = console.issue_ticket(user=user, vm=vm, kind="vnc")
        barrier = threading.Barrier(6)
        outcomes: list[str] = []

        def use(issued=issued, barrier=barrier, outcomes=outcomes):
            try:
                barrier.wait()
                _redeem(issued)
                outcomes.append("opened")
            except console.TicketRefused:
                outcomes.append("refused")
            finally:
                connection.close()

        threads = [threading.Thread(target=use) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(outcomes) == ["opened"] + ["refused"] * 5


# --- who gets a ticket ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR, Role.MEMBER])
def test_members_and_up_get_a_ticket(role, tenant, make_member, vm):
    user = make_member(tenant, role)
    assert console.issue_ticket(user=user, vm=vm, kind="serial").ticket


def test_a_viewer_gets_no_ticket(tenant, make_member, vm):
    with pytest.raises(PermissionDenied):
        console.issue_ticket(user=make_member(tenant, Role.VIEWER), vm=vm, kind="vnc")
    assert not ConsoleTicket.objects.exists()


def test_another_tenant_does_not_even_see_the_vm(other_tenant, make_member, vm):
    with pytest.raises(Http404):
        console.issue_ticket(user=make_member(other_tenant, Role.ADMIN), vm=vm, kind="vnc")


def test_a_platform_admin_gets_a_ticket(admin_user, vm):
    assert console.issue_ticket(user=admin_user, vm=vm, kind="vnc").ticket


def _call_api(user, vm_id, method="post", data=None):
    """The routed ``/api/vms/{id}/console/`` (the viewset's action), as ``user``."""
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    path = f"/api/vms/{vm_id}/console/"
    if method == "post":
        return client.post(path, data or {}, format="json")
    return client.get(path)


def test_the_api_answers_a_ticket_and_its_url(member, vm):
    response = _call_api(member, vm.pk, data={"kind": "serial"})
    assert response.status_code == 201, response.data
    body = response.data
    assert set(body) == {"ticket", "url", "expires"}
    assert body["url"] == f"/ws/console/{vm.pk}/serial/{body['ticket']}/"
    assert console.redeem_ticket(body["ticket"], vm_id=vm.pk, kind="serial").user == member


def test_the_api_defaults_to_vnc_and_checks_the_kind(member, vm):
    assert "/vnc/" in _call_api(member, vm.pk).data["url"]
    response = _call_api(member, vm.pk, data={"kind": "spice"})
    assert response.status_code == 400
    assert "kind" in response.data


def test_the_api_refuses_viewers_other_tenants_and_strangers(tenant, other_tenant, make_member, vm):
    assert _call_api(make_member(tenant, Role.VIEWER), vm.pk).status_code == 403
    assert _call_api(make_member(other_tenant, Role.ADMIN), vm.pk).status_code == 404
    assert _call_api(None, vm.pk).status_code in (401, 403)
    assert not ConsoleTicket.objects.exists()


def test_a_vm_gone_from_its_host_gets_no_ticket(member, vm):
    vm.gone = True
    vm.save()
    # The routed endpoint hides gone VMs like every VM route does; asked for, it refuses.
    assert _call_api(member, vm.pk).status_code == 404
    client = APIClient()
    client.force_authenticate(user=member)
    assert client.post(f"/api/vms/{vm.pk}/console/?gone=true", {}, format="json").status_code == 400
    assert not ConsoleTicket.objects.exists()


# --- who is connected ---------------------------------------------------------------------------


def test_connected_users_follow_the_sessions(member, admin_user, vm):
    first = _redeem(console.issue_ticket(user=member, vm=vm, kind="vnc"))
    second = _redeem(console.issue_ticket(user=admin_user, vm=vm, kind="vnc"))
    assert console.connected_users(vm.pk, "vnc") == []  # redeemed, not yet open
    console.session_opened(first.pk)
    console.session_opened(second.pk)
    assert console.connected_users(vm.pk, "vnc") == sorted([member.username, admin_user.username])
    assert console.connected_users(vm.pk, "serial") == []
    console.session_closed(second.pk)
    assert console.status_event(vm.pk, "vnc") == {
        "type": "console.status",
        "vm": vm.pk,
        "kind": "vnc",
        "connected": [member.username],
    }
    later = timezone.now() + timedelta(seconds=console.STALE_SECONDS + 1)
    assert console.connected_users(vm.pk, "vnc", now=later) == []  # its process died
    response = _call_api(member, vm.pk, method="get")
    assert response.status_code == 200
    assert response.data == {"vnc": [member.username], "serial": []}


def test_old_tickets_are_purged(member, vm):
    now = timezone.now()
    console.issue_ticket(user=member, vm=vm, kind="vnc", now=now - timedelta(hours=2))
    used = _redeem(console.issue_ticket(user=member, vm=vm, kind="vnc"))
    console.session_closed(used.pk)
    console.issue_ticket(user=member, vm=vm, kind="vnc", now=now)
    assert ConsoleTicket.objects.count() == 2  # the unused expired one is gone


# --- where the VNC socket is --------------------------------------------------------------------


def _graphics_xml(graphics: str) -> str:
    return f"<domain type='qemu'><name>x</name><devices>{graphics}</devices></domain>"


@pytest.mark.parametrize(
    ("graphics", "endpoint"),
    [
        (
            "<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'/>",
            ("127.0.0.1", 5901),
        ),
        ("<graphics type='vnc' port='5902' listen='0.0.0.0'/>", ("127.0.0.1", 5902)),
        ("<graphics type='vnc' port='5903'/>", ("127.0.0.1", 5903)),
        (
            "<graphics type='vnc' port='5904'><listen type='address' address='10.1.2.3'/></graphics>",
            ("10.1.2.3", 5904),
        ),
    ],
)
def test_the_vnc_endpoint_comes_from_the_live_xml(graphics, endpoint):
    assert driver_console.vnc_endpoint(_graphics_xml(graphics)) == endpoint


def test_a_display_without_a_port_is_unavailable():
    with pytest.raises(driver_console.ConsoleUnavailable):
        driver_console.vnc_endpoint(
            _graphics_xml("<graphics type='vnc' port='-1' autoport='yes'/>")
        )


def test_the_ssh_tunnel_uses_the_pinned_key_only(settings, tmp_path):
    key = tmp_path / "ssh" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not used")
    settings.PADDOCK = {**settings.PADDOCK, "SSH_KEY": str(key)}
    pinned = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnJ1Fz8rZ5dbU1wQ2Jh8bCDGoDyq3VqgI8o8jmEJD8c"
    host = Host(name="hv2", uri="qemu+ssh://paddock@hv2.example:2222/system", ssh_host_key=pinned)
    argv = driver_console.ssh_tunnel_argv(host, "127.0.0.1", 5905)
    assert argv[-5:] == ["-T", "-W", "127.0.0.1:5905", "--", "paddock@hv2.example"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert "StrictHostKeyChecking=yes" in argv
    assert f"IdentityFile={key}" in argv
    known_hosts = Path(
        next(a for a in argv if a.startswith("UserKnownHostsFile=")).split("=", 1)[1]
    )
    assert known_hosts.read_text() == f"[hv2.example]:2222 {pinned}\n"
    host.ssh_host_key = ""
    with pytest.raises(HostConnectError):
        driver_console.ssh_tunnel_argv(host, "127.0.0.1", 5905)
