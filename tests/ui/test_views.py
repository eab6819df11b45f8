"""The server-rendered console: pages, scoping, forms mapped onto services, query counts."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hosts.models import Host, Network, StoragePool
from panel.choices import Role, TaskState
from panel.models import ApiToken, Membership, Task, Tenant
from tests.ui.conftest import login, main, text
from vms.models import Disk, Nic, VirtualMachine

pytestmark = pytest.mark.django_db


# --- every page renders --------------------------------------------------------------------


def admin_urls(host: Host, tenant: Tenant) -> list[str]:
    vm = VirtualMachine.objects.filter(host=host).order_by("name").first()
    pool = StoragePool.objects.filter(host=host).first()
    network = Network.objects.filter(host=host).first()
    task = Task.objects.filter(host=host).first()
    urls = [
        reverse("ui:datacenter"),
        reverse("ui:search") + "?q=web",
        reverse("ui:search"),
        reverse("ui:host_list"),
        reverse("ui:host_list") + "?status=online&q=sim",
        reverse("ui:host_add"),
        reverse("ui:host_edit", args=[host.pk]),
        reverse("ui:host_remove", args=[host.pk]),
        reverse("ui:pool", args=[pool.pk]),
        reverse("ui:pool", args=[pool.pk]) + "?q=disk0",
        reverse("ui:network", args=[network.pk]),
        reverse("ui:vm_list"),
        reverse("ui:vm_list") + f"?state=running&host={host.pk}&tenant={tenant.pk}&q=web&page=2",
        reverse("ui:vm_list") + "?gone=true",
        reverse("ui:vm_edit", args=[vm.pk]),
        reverse("ui:task_list"),
        reverse("ui:task_list") + "?state=succeeded&kind=host.sync",
        reverse("ui:task", args=[task.pk]),
        reverse("ui:task_live", args=[task.pk]),
        reverse("ui:task_row", args=[task.pk]),
        reverse("ui:taskbar"),
        reverse("ui:tenant_list"),
        reverse("ui:user_list"),
        reverse("ui:tokens"),
        reverse("ui:tree_host_vms", args=[host.pk]),
        reverse("ui:tree_host_pools", args=[host.pk]),
        reverse("ui:tree_host_networks", args=[host.pk]),
        reverse("ui:tree_tenant_vms", args=[tenant.pk]),
    ]
    for tab in ("summary", "vms", "storage", "networks", "tasks", "bogus"):
        urls.append(reverse("ui:host", args=[host.pk]) + f"?tab={tab}")
    for tab in ("summary", "hardware", "snapshots", "tasks"):
        urls.append(reverse("ui:vm", args=[vm.pk]) + f"?tab={tab}")
    for tab in ("summary", "members", "vms"):
        urls.append(reverse("ui:tenant", args=[tenant.pk]) + f"?tab={tab}")
    return urls


def test_every_page_renders_for_the_platform_admin(client, admin_user, synced_host, acme_vms):
    tenant = acme_vms[0].tenant
    login(client, admin_user)
    for url in admin_urls(synced_host, tenant):
        response = client.get(url)
        assert response.status_code == 200, url


def test_search_suggestions_are_a_partial(client, admin_user, synced_host):
    login(client, admin_user)
    response = client.get(reverse("ui:search") + "?q=web", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "<html" not in text(response)
    assert "web-01" in text(response)


def test_login_page_and_anonymous_redirect(client, db):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert 'name="password"' in text(response)
    response = client.get(reverse("ui:vm_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_with_the_form_reaches_the_datacenter(client, admin_user):
    response = client.post(
        reverse("login"), {"username": "root-admin", "password": "pw-admin"}, follow=True
    )
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("ui:datacenter")
    assert 'id="tree"' in text(response)


def test_shell_has_tree_search_user_menu_and_task_bar(client, admin_user, synced_host):
    login(client, admin_user)
    page = text(client.get(reverse("ui:datacenter")))
    assert 'id="tree"' in page
    # Only the first level is in the page; the hosts load when the datacenter node opens,
    # what a host holds when the host opens.
    assert reverse("ui:tree_hosts") in page and reverse("ui:tree_tenants") in page
    assert 'hx-trigger="paddock:expand once"' in page
    hosts = text(client.get(reverse("ui:tree_hosts")))
    assert reverse("ui:tree_host", args=[synced_host.pk]) in hosts
    host = text(client.get(reverse("ui:tree_host", args=[synced_host.pk])))
    assert reverse("ui:tree_host_vms", args=[synced_host.pk]) in host
    assert 'action="/search/"' in page
    assert reverse("ui:tokens") in page and "/api/docs/" in page
    assert 'action="/logout/"' in page
    assert 'id="taskbar-rows"' in page and 'data-poll="taskbar"' in page
    assert "X-CSRFToken" in page
    assert "Sync host sim-01" in page  # the first sync is in the task bar
    # Nothing from a CDN.
    assert not re.search(r'(src|href)="https?://', page)


def test_host_summary_shows_numa_topology(client, admin_user, synced_host):
    login(client, admin_user)
    page = text(client.get(reverse("ui:host", args=[synced_host.pk])))
    assert page.count('class="numa-cell"') == 2
    assert "Node 0" in page and "Node 1" in page
    assert "simulated topology" in page
    assert "0-7, 16-23" in page  # CPU ids of node 0 as ranges
    assert "2 MiB" in page and "1 GiB" in page  # hugepage sizes
    assert "Icelake-Server" in page


def test_host_last_error_is_a_red_banner(client, admin_user, synced_host):
    Host.objects.filter(pk=synced_host.pk).update(last_error="Connection refused by the host")
    login(client, admin_user)
    page = text(client.get(reverse("ui:host", args=[synced_host.pk])))
    assert 'class="alert alert-error"' in page
    assert "Connection refused by the host" in page


def test_vm_pages_show_summary_hardware_and_gone_banner(client, admin_user, synced_host):
    vm = VirtualMachine.objects.filter(host=synced_host).order_by("name").first()
    login(client, admin_user)
    page = text(client.get(reverse("ui:vm", args=[vm.pk])))
    assert str(vm.uuid) in page and vm.machine in page
    assert "Gone from its host" not in page
    hardware = text(client.get(reverse("ui:vm", args=[vm.pk]) + "?tab=hardware"))
    disk = vm.disks.first()
    nic = vm.nics.first()
    assert disk.target in hardware and disk.source in hardware
    assert nic.mac in hardware
    VirtualMachine.objects.filter(pk=vm.pk).update(gone=True)
    assert "Gone from its host" in text(client.get(reverse("ui:vm", args=[vm.pk])))


# --- tenant scoping ------------------------------------------------------------------------


def test_tenant_operator_sees_only_their_tenants_vms(
    client, make_member, synced_host, acme_vms, globex_vms
):
    tenant = acme_vms[0].tenant
    operator = make_member(tenant, Role.OPERATOR)
    login(client, operator)
    acme_names = {vm.name for vm in acme_vms}
    hidden = VirtualMachine.objects.exclude(tenant=tenant)

    page = text(client.get(reverse("ui:vm_list")))
    for name in acme_names:
        assert name in page
    for vm in hidden:
        assert f">{vm.name}<" not in page

    tree = text(client.get(reverse("ui:tree_tenant_vms", args=[tenant.pk])))
    assert {m for m in re.findall(r'class="label">([^<]+)<', tree)} == acme_names
    other = globex_vms[0].tenant
    assert client.get(reverse("ui:tree_tenant_vms", args=[other.pk])).status_code == 404
    assert client.get(reverse("ui:tree_host_vms", args=[synced_host.pk])).status_code == 403

    found = text(client.get(reverse("ui:search") + "?q=0"))
    assert "web-01" in found
    assert "db-01" not in found and "dns-01" not in found
    suggest = text(client.get(reverse("ui:search") + "?q=db", HTTP_HX_REQUEST="true"))
    assert "db-01" not in suggest

    # Searching by the MAC or UUID of another tenant's VM finds nothing.
    stranger = globex_vms[0]
    assert stranger.name not in text(
        client.get(reverse("ui:search") + f"?q={stranger.nics.first().mac}")
    )
    assert stranger.name not in text(client.get(reverse("ui:search") + f"?q={stranger.uuid}"))


def test_tenant_user_tree_shows_their_tenants_and_no_hosts(
    client, make_member, synced_host, acme_vms, other_tenant
):
    tenant = acme_vms[0].tenant
    login(client, make_member(tenant, Role.OPERATOR))
    page = text(client.get(reverse("ui:datacenter")))
    assert reverse("ui:tree_tenants") in page and reverse("ui:tree_hosts") not in page
    tree = text(client.get(reverse("ui:tree_tenants")))
    assert reverse("ui:tree_tenant_vms", args=[tenant.pk]) in tree
    assert reverse("ui:tree_tenant_vms", args=[other_tenant.pk]) not in tree
    assert reverse("ui:host", args=[synced_host.pk]) not in page + tree
    assert client.get(reverse("ui:tree_hosts")).status_code == 403
    assert "Sync host" not in page  # the host's tasks belong to no tenant of theirs


def test_other_tenants_vm_is_404_and_host_pages_are_403(
    client, make_member, synced_host, acme_vms, globex_vms
):
    tenant = acme_vms[0].tenant
    login(client, make_member(tenant, Role.OPERATOR))
    assert client.get(reverse("ui:vm", args=[acme_vms[0].pk])).status_code == 200
    assert client.get(reverse("ui:vm", args=[globex_vms[0].pk])).status_code == 404
    assert client.get(reverse("ui:vm_edit", args=[globex_vms[0].pk])).status_code == 404
    default_vm = VirtualMachine.objects.filter(tenant__name="default").first()
    assert client.get(reverse("ui:vm", args=[default_vm.pk])).status_code == 404
    assert client.get(reverse("ui:tenant", args=[globex_vms[0].tenant_id])).status_code == 404

    pool = StoragePool.objects.filter(host=synced_host).first()
    network = Network.objects.filter(host=synced_host).first()
    for url in (
        reverse("ui:host", args=[synced_host.pk]),
        reverse("ui:host_list"),
        reverse("ui:host_add"),
        reverse("ui:host_edit", args=[synced_host.pk]),
        reverse("ui:host_remove", args=[synced_host.pk]),
        reverse("ui:pool", args=[pool.pk]),
        reverse("ui:network", args=[network.pk]),
        reverse("ui:user_list"),
    ):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("ui:host_sync", args=[synced_host.pk])).status_code == 403
    task = Task.objects.get(host=synced_host)
    assert client.get(reverse("ui:task", args=[task.pk])).status_code == 404


def test_viewer_sees_no_edit_button_and_may_not_edit(client, make_member, acme_vms):
    tenant = acme_vms[0].tenant
    vm = acme_vms[0]
    edit_url = reverse("ui:vm_edit", args=[vm.pk])

    login(client, make_member(tenant, Role.OPERATOR))
    assert edit_url in text(client.get(reverse("ui:vm", args=[vm.pk])))

    login(client, make_member(tenant, Role.VIEWER))
    page = text(client.get(reverse("ui:vm", args=[vm.pk])))
    assert edit_url not in page
    assert client.get(edit_url).status_code == 403
    assert client.post(edit_url, {"description": "x", "tags": ""}).status_code == 403
    vm.refresh_from_db()
    assert vm.description != "x"


def test_operator_edits_a_vm_through_the_service(client, make_member, acme_vms):
    vm = acme_vms[0]
    login(client, make_member(vm.tenant, Role.OPERATOR))
    url = reverse("ui:vm_edit", args=[vm.pk])
    page = text(client.get(url))
    assert 'name="tenant"' not in page  # only platform admins move VMs
    response = client.post(url, {"description": "front end", "tags": "prod, web"})
    assert response.status_code == 302
    vm.refresh_from_db()
    assert vm.description == "front end" and vm.tags == ["prod", "web"]

    response = client.post(url, {"description": "", "tags": "bad/tag"})
    assert response.status_code == 400
    assert "Invalid tag" in text(response)


def test_platform_admin_moves_a_vm_to_another_tenant(client, admin_user, acme_vms, other_tenant):
    vm = acme_vms[0]
    login(client, admin_user)
    response = client.post(
        reverse("ui:vm_edit", args=[vm.pk]),
        {"description": "", "tags": "", "tenant": other_tenant.pk},
    )
    assert response.status_code == 302
    vm.refresh_from_db()
    assert vm.tenant_id == other_tenant.pk


# --- hosts ---------------------------------------------------------------------------------


def test_add_host_with_malformed_uri_shows_the_error_and_creates_nothing(client, admin_user):
    login(client, admin_user)
    response = client.post(
        reverse("ui:host_add"), {"name": "pve-01", "uri": "http://pve-01/", "tags": ""}
    )
    assert response.status_code == 400
    page = text(response)
    assert "Unsupported scheme" in page
    # The message sits on the URI field.
    assert re.search(r'for="id_uri".*?field-error[^>]*>[^<]*Unsupported scheme', page, re.S)
    assert not Host.objects.exists()
    assert not Task.objects.exists()


def test_add_host_redirects_to_the_host_page(client, admin_user, node_uri, run_tasks):
    login(client, admin_user)
    response = client.post(
        reverse("ui:host_add"),
        {"name": "sim-02", "uri": node_uri, "description": "lab", "tags": "lab, sim"},
    )
    host = Host.objects.get(name="sim-02")
    assert response.status_code == 302
    assert response["Location"] == reverse("ui:host", args=[host.pk])
    assert host.tags == ["lab", "sim"]
    assert Task.objects.filter(host=host, kind="host.sync").count() == 1


def test_resync_creates_a_task_and_a_busy_host_says_which_task(client, admin_user, synced_host):
    login(client, admin_user)
    url = reverse("ui:host_sync", args=[synced_host.pk])
    before = Task.objects.count()
    response = client.post(url, follow=True)
    assert response.status_code == 200
    task = Task.objects.order_by("-pk").first()
    assert Task.objects.count() == before + 1
    assert task.kind == "host.sync" and task.host_id == synced_host.pk
    assert f"task #{task.pk}" in text(response)
    # Test transactions never commit, so the task stays queued and holds the host's lock.
    response = client.post(url, follow=True)
    assert Task.objects.count() == before + 1
    assert f"busy with task #{task.pk}" in text(response)
    assert client.get(url).status_code == 405


def test_edit_host_maps_tag_errors_onto_the_field(client, admin_user, synced_host):
    login(client, admin_user)
    url = reverse("ui:host_edit", args=[synced_host.pk])
    assert client.post(url, {"description": "rack 4", "tags": "a b"}).status_code == 302
    synced_host.refresh_from_db()
    assert synced_host.description == "rack 4" and synced_host.tags == ["a", "b"]
    response = client.post(url, {"description": "", "tags": "a a"})
    assert response.status_code == 400
    assert "Tags must not repeat." in text(response)


def test_remove_host_confirms_then_forgets_only(client, admin_user, synced_host):
    login(client, admin_user)
    url = reverse("ui:host_remove", args=[synced_host.pk])
    page = text(client.get(url))
    assert "Nothing on the host is touched" in page
    assert Host.objects.filter(pk=synced_host.pk).exists()
    response = client.post(url)
    assert response.status_code == 302
    assert not Host.objects.filter(pk=synced_host.pk).exists()


# --- the VM list ---------------------------------------------------------------------------


def _grow_to(host: Host, tenant: Tenant, count: int) -> None:
    """Give the host exactly ``count`` VMs of ``tenant``, each with a disk and a NIC."""
    import uuid

    VirtualMachine.objects.filter(host=host).update(tenant=tenant)
    existing = list(VirtualMachine.objects.filter(host=host).order_by("pk"))
    if len(existing) > count:
        VirtualMachine.objects.filter(pk__in=[vm.pk for vm in existing[count:]]).delete()
        return
    new = VirtualMachine.objects.bulk_create(
        VirtualMachine(host=host, tenant=tenant, name=f"extra-{i:03d}", uuid=uuid.uuid4())
        for i in range(count - len(existing))
    )
    Disk.objects.bulk_create(Disk(vm=vm, target="vda", source=f"/x/{vm.name}") for vm in new)
    Nic.objects.bulk_create(
        Nic(vm=vm, mac=f"52:54:01:00:{i // 256:02x}:{i % 256:02x}") for i, vm in enumerate(new)
    )


@pytest.mark.parametrize("as_admin", [True, False], ids=["admin", "tenant-operator"])
def test_vm_list_costs_the_same_queries_for_10_and_60_vms(
    client, admin_user, make_member, synced_host, tenant, as_admin
):
    user = admin_user if as_admin else make_member(tenant, Role.OPERATOR)
    login(client, user)
    url = reverse("ui:vm_list")
    counts = {}
    for size in (10, 60):
        _grow_to(synced_host, tenant, size)
        client.get(url)  # warm caches (session, content types)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        assert text(response).count('<tr class=""') + text(response).count("<tr>") >= min(size, 50)
        counts[size] = len(ctx.captured_queries)
    assert counts[10] == counts[60], counts


def test_vm_list_filters_and_paginates_with_the_api_filterset(
    client, admin_user, api, synced_host, tenant
):
    _grow_to(synced_host, tenant, 60)
    login(client, admin_user)
    first = text(client.get(reverse("ui:vm_list")))
    assert "1–50 of 60" in first
    second = text(client.get(reverse("ui:vm_list") + "?page=2"))
    assert "51–60 of 60" in second

    query = "state=running"
    page = text(client.get(reverse("ui:vm_list") + "?" + query))
    running = VirtualMachine.objects.filter(state="running", gone=False).count()
    assert f"of {running}" in page
    data = api.as_user(admin_user).get("/api/vms/?" + query).json()
    assert data["count"] == running


# --- tasks ---------------------------------------------------------------------------------


def test_task_detail_shows_the_log_and_stops_polling_when_final(client, admin_user, synced_host):
    task = Task.objects.get(host=synced_host)
    login(client, admin_user)
    page = text(client.get(reverse("ui:task", args=[task.pk])))
    assert task.log_entries.first().message in page
    assert reverse("ui:task_live", args=[task.pk]) not in page  # finished: no polling
    Task.objects.filter(pk=task.pk).update(state=TaskState.RUNNING, finished=None)
    page = text(client.get(reverse("ui:task", args=[task.pk])))
    assert reverse("ui:task_live", args=[task.pk]) in page


def test_task_list_filters_by_state_and_kind(client, admin_user, synced_host):
    Task.objects.create(kind="vm.start", state=TaskState.FAILED, target="vm x", error="boom")
    login(client, admin_user)
    page = main(client.get(reverse("ui:task_list") + "?state=failed"))
    assert "Vm start" in page and "boom" in page
    assert not re.search(r"#\d+ Sync host", page)
    page = main(client.get(reverse("ui:task_list") + "?kind=host.sync"))
    assert re.search(r"#\d+ Sync host sim-01", page) and "boom" not in page


# --- tenancy -------------------------------------------------------------------------------


def test_admin_creates_a_tenant_and_errors_show_on_the_form(client, admin_user):
    login(client, admin_user)
    response = client.post(
        reverse("ui:tenant_list"), {"tenant-name": "initech", "tenant-description": "x"}
    )
    tenant = Tenant.objects.get(name="initech")
    assert response["Location"] == reverse("ui:tenant", args=[tenant.pk])
    response = client.post(reverse("ui:tenant_list"), {"tenant-name": "bad name!"})
    assert response.status_code == 200
    assert "Use 1-63 letters" in text(response)


def test_tenant_admin_manages_memberships(client, make_member, tenant, other_tenant):
    admin = make_member(tenant, Role.ADMIN)
    viewer = make_member(tenant, Role.VIEWER)
    # A member of another tenant this admin also administers: one they may add.
    outsider = make_member(other_tenant, Role.VIEWER, username="newbie")
    Membership.objects.create(user=admin, tenant=other_tenant, role=Role.ADMIN)
    login(client, admin)
    page = text(client.get(reverse("ui:tenant", args=[tenant.pk]) + "?tab=members"))
    assert viewer.username in page and "Add member" in page

    url = reverse("ui:membership_add", args=[tenant.pk])
    assert (
        client.post(url, {"member-username": "newbie", "member-role": "member"}).status_code == 302
    )
    membership = Membership.objects.get(user=outsider, tenant=tenant)
    assert membership.role == Role.MEMBER

    response = client.post(url, {"member-username": "newbie", "member-role": "member"})
    assert response.status_code == 400 and "already a member" in text(response)
    response = client.post(url, {"member-username": "nobody", "member-role": "member"})
    assert response.status_code == 400 and "No such user among your tenants" in text(response)

    client.post(reverse("ui:membership_role", args=[membership.pk]), {"role": "operator"})
    membership.refresh_from_db()
    assert membership.role == Role.OPERATOR
    client.post(reverse("ui:membership_remove", args=[membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()

    # The last admin stays.
    own = Membership.objects.get(user=admin, tenant=tenant)
    response = client.post(reverse("ui:membership_remove", args=[own.pk]), follow=True)
    assert "keeps at least one admin" in text(response)
    assert Membership.objects.filter(pk=own.pk).exists()


def test_tenant_viewer_cannot_manage_memberships(client, make_member, tenant):
    viewer = make_member(tenant, Role.VIEWER)
    login(client, viewer)
    page = text(client.get(reverse("ui:tenant", args=[tenant.pk]) + "?tab=members"))
    assert "Add member" not in page
    response = client.post(
        reverse("ui:membership_add", args=[tenant.pk]),
        {"member-username": viewer.username, "member-role": "admin"},
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=viewer).role == Role.VIEWER


def test_admin_creates_a_user(client, admin_user):
    login(client, admin_user)
    response = client.post(
        reverse("ui:user_list"),
        {"user-username": "carol", "user-password": "a-long-passphrase", "user-email": ""},
    )
    assert response.status_code == 302
    response = client.post(
        reverse("ui:user_list"), {"user-username": "carol", "user-password": "another-one"}
    )
    assert response.status_code == 400
    assert "exists already" in text(response)


# --- API tokens ----------------------------------------------------------------------------


def test_token_secret_is_shown_once_and_only_its_hash_is_stored(client, admin_user):
    login(client, admin_user)
    response = client.post(reverse("ui:tokens"), {"name": "terraform"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    match = re.search(r'id="token-secret" class="secret">([^<]+)<', text(response))
    raw = match.group(1)
    token = ApiToken.objects.get(user=admin_user)
    assert token.name == "terraform"
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {token.name, token.prefix, token.key_hash}
    assert raw.startswith(token.prefix)
    # Shown once: the list never shows it again.
    again = text(client.get(reverse("ui:tokens")))
    assert raw not in again and f"{token.prefix}…" in again
    # The token works on the API.
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert api.get("/api/auth/whoami/").json()["username"] == admin_user.username


def test_token_revoke_is_only_for_the_owner(client, admin_user, make_member, tenant):
    token, _raw = ApiToken.issue(user=admin_user, name="mine")
    login(client, make_member(tenant, Role.ADMIN))
    assert client.post(reverse("ui:token_revoke", args=[token.pk])).status_code == 404
    login(client, admin_user)
    assert client.post(reverse("ui:token_revoke", args=[token.pk])).status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_tree_node_lists_at_most_200_children_and_links_to_the_rest(
    client, admin_user, synced_host, tenant
):
    _grow_to(synced_host, tenant, 205)
    login(client, admin_user)
    page = text(client.get(reverse("ui:tree_host_vms", args=[synced_host.pk])))
    assert page.count('class="leaf"') == 200
    assert f'href="{reverse("ui:vm_list")}?host={synced_host.pk}"' in page
    page = text(client.get(reverse("ui:tree_tenant_vms", args=[tenant.pk])))
    assert page.count('class="leaf"') == 200
    assert f'href="{reverse("ui:vm_list")}?tenant={tenant.pk}"' in page
