"""The VM lifecycle in the console: the create wizard, power buttons per role, hardware and
snapshot dialogs, clone/template/delete, and the tenant's quota page — all through vms.services."""

from __future__ import annotations

import re

import libvirt
import pytest
from django.db.models import Sum
from django.urls import reverse

from hosts.driver.connection import get_connection
from hosts.models import Network, StoragePool, Volume
from panel.choices import Role, TaskState
from panel.models import Task
from tests.ui.conftest import login, main, text
from tuning.models import DedicatedCpu
from tuning.profiles import ensure_builtins
from vms.models import Disk, VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def granted(synced_host, tenant, admin_user, make_member):
    """The simulated host; tenant acme may use it, its default pool, isos and network lan."""
    pool = StoragePool.objects.get(host=synced_host, name="default")
    isos = StoragePool.objects.get(host=synced_host, name="isos")
    lan = Network.objects.get(host=synced_host, name="lan")
    tenant.allowed_hosts.add(synced_host)
    tenant.allowed_pools.add(pool, isos)
    tenant.allowed_networks.add(lan)
    VirtualMachine.objects.filter(host=synced_host, name__startswith="web-").update(tenant=tenant)
    # What moving the VMs through the service does: their disks become the tenant's.
    Volume.objects.filter(disks__vm__name__startswith="web-", disks__device="disk").update(
        tenant=tenant
    )
    Volume.objects.filter(pool=isos, name="debian-12.iso").update(published=True)
    return {
        "host": synced_host,
        "pool": pool,
        "lan": lan,
        "iso": Volume.objects.get(pool=isos, name="debian-12.iso"),
        "tenant": tenant,
        "admin": admin_user,
        "operator": make_member(tenant, Role.OPERATOR),
        "member": make_member(tenant, Role.MEMBER),
        "viewer": make_member(tenant, Role.VIEWER),
    }


def wizard_post(granted, **over) -> dict:
    """A complete wizard submission: one 4 GiB qcow2 disk, one NIC on lan, the Debian ISO."""
    data = {
        "name": "ui-vm-01",
        "tenant": granted["tenant"].pk,
        "host": granted["host"].pk,
        "description": "made in the wizard",
        "tags": "ui, test",
        "cdrom": granted["iso"].pk,
        "firmware": "bios",
        "machine": "q35",
        "boot": "disk,cdrom,network",
        "disk-0-source": "new",
        "disk-0-size_gib": "4",
        "disk-0-pool": granted["pool"].pk,
        "disk-0-format": "qcow2",
        "disk-0-bus": "virtio",
        "vcpus": "2",
        "max_vcpus": "4",
        "cpu_model": "",
        "memory_mib": "1024",
        "max_memory_mib": "2048",
        "nic-0-network": granted["lan"].pk,
        "nic-0-model": "virtio",
        "nic-0-mac": "",
        "start": "on",
    }
    data.update({key: value for key, value in over.items() if value is not None})
    for key in [key for key, value in over.items() if value is None]:
        data.pop(key, None)
    return data


def acme_vm(granted, state: str, **filters) -> VirtualMachine:
    return (
        VirtualMachine.objects.filter(tenant=granted["tenant"], state=state, **filters)
        .order_by("name")
        .first()
    )


def qcow2_vm(host, state: str) -> VirtualMachine:
    """The smallest VM in ``state`` whose disks are all qcow2 (snapshots are possible; copies
    of its disks fit in the simulated pool)."""
    raw = Disk.objects.filter(device="disk").exclude(format="qcow2").values("vm")
    return (
        VirtualMachine.objects.filter(host=host, state=state, disks__device="disk")
        .exclude(pk__in=raw)
        .exclude(firmware="uefi")
        .annotate(size=Sum("disks__volume__capacity"))
        .order_by("size", "name")
        .first()
    )


# --- create wizard ---------------------------------------------------------------------------


def test_wizard_creates_a_running_vm_end_to_end(client, granted, run_tasks):
    login(client, granted["admin"])
    page = text(client.get(reverse("ui:vm_create")))
    for step in ("General", "OS", "Disks", "CPU", "Memory", "Network", "Confirm"):
        assert f'data-step-tab="{step.lower()}"' in page
    assert "debian-12.iso" in page and "default (dir," in page

    response = client.post(reverse("ui:vm_create"), wizard_post(granted))
    vm = VirtualMachine.objects.get(name="ui-vm-01")
    assert response.status_code == 302 and response["Location"] == reverse("ui:vm", args=[vm.pk])
    task = Task.objects.get(kind="vm.create", vm=vm)
    page = text(client.get(response["Location"]))
    assert f'href="{reverse("ui:task", args=[task.pk])}">task #{task.pk}</a>' in page
    assert "Busy with" in page  # the create task holds the new VM until it has run

    run_tasks()
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    dom = get_connection(granted["host"]).lookupByName("ui-vm-01")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    vm.refresh_from_db()
    assert (vm.state, vm.lifecycle, vm.vcpus, vm.max_vcpus) == ("running", "ready", 2, 4)
    assert (vm.memory_mib, vm.max_memory_mib) == (1024, 2048)
    assert vm.tags == ["ui", "test"] and vm.description == "made in the wizard"
    disk = vm.disks.get(device="disk")
    assert disk.format == "qcow2" and disk.volume.capacity == 4 * 1024**3
    assert vm.disks.get(device="cdrom").source == granted["iso"].path
    assert vm.nics.get().network == granted["lan"]
    page = text(client.get(reverse("ui:vm", args=[vm.pk])))
    assert "Busy with" not in page and 'data-power="stop"' in page


def test_wizard_with_automatic_host_and_no_disks(client, granted):
    login(client, granted["admin"])
    data = {
        key: value
        for key, value in wizard_post(granted, name="auto-01", host="", cdrom="").items()
        if not key.startswith(("disk-", "nic-"))
    }
    response = client.post(reverse("ui:vm_create"), data)
    assert response.status_code == 302, main(response)
    vm = VirtualMachine.objects.get(name="auto-01")
    assert vm.host == granted["host"] and not vm.disks.filter(device="disk").exists()


def test_bad_input_rerenders_with_field_errors_and_creates_nothing(client, granted):
    login(client, granted["admin"])
    before = Task.objects.count()

    response = client.post(reverse("ui:vm_create"), wizard_post(granted, name="bad name!"))
    assert response.status_code == 400
    page = main(response)
    assert 'data-start-step="general"' in page
    assert "Use 1-63 letters" in page
    assert 'value="bad name!"' in page  # the input is kept

    response = client.post(
        reverse("ui:vm_create"), wizard_post(granted, **{"disk-0-size_gib": "-3"})
    )
    assert response.status_code == 400
    page = main(response)
    assert 'data-start-step="disks"' in page and "Disk size: Between 0 and 65536 GiB." in page
    assert 'class="wizard-tab has-error" id="tab-disks"' in page

    response = client.post(reverse("ui:vm_create"), wizard_post(granted, vcpus="64"))
    assert 'data-start-step="cpu"' in main(response) and "has 32 CPUs" in main(response)

    response = client.post(
        reverse("ui:vm_create"), wizard_post(granted, **{"nic-0-mac": "01:00:5e:00:00:01"})
    )
    assert 'data-start-step="network"' in main(response) and "multicast" in main(response)

    response = client.post(reverse("ui:vm_create"), wizard_post(granted, **{"disk-0-pool": ""}))
    assert response.status_code == 400 and "Choose a storage pool." in main(response)

    assert not VirtualMachine.objects.filter(name__in=["ui-vm-01", "bad name!"]).exists()
    assert Task.objects.count() == before
    names = [d.name() for d in get_connection(granted["host"]).listAllDomains()]
    assert "ui-vm-01" not in names


def test_quota_left_is_shown_and_a_request_over_it_is_refused(client, granted):
    tenant = granted["tenant"]
    tenant.max_vcpus = 40
    tenant.max_vms = 50
    tenant.save()
    used = sum(VirtualMachine.objects.filter(tenant=tenant).values_list("vcpus", flat=True))
    login(client, granted["operator"])
    page = main(client.get(reverse("ui:vm_create")))
    row = re.search(r'data-quota-key="vcpus">(.*?)</tr>', page, re.S).group(1)
    assert f">{used}<" in row and ">40<" in row and f">{40 - used}<" in row
    assert "unlimited" in page  # memory and disk have no limit

    response = client.post(reverse("ui:vm_create"), wizard_post(granted, vcpus=str(41 - used)))
    assert response.status_code == 400
    page = main(response)
    assert 'data-start-step="confirm"' in page and "Quota of tenant acme exceeded" in page
    assert not VirtualMachine.objects.filter(name="ui-vm-01").exists()


def test_operator_wizard_lists_only_the_tenants_placement(client, granted, run_tasks):
    login(client, granted["operator"])
    page = main(client.get(reverse("ui:vm_create")))
    assert "default (dir," in page and "lan (" in page
    assert "vg0 (" not in page and "isolated (" not in page and "vlan100 (" not in page
    # The options partial answers the same for the chosen host.
    partial = text(
        client.get(
            reverse("ui:vm_create_options"),
            {"tenant": granted["tenant"].pk, "host": granted["host"].pk},
        )
    )
    assert "<html" not in partial and "default (dir," in partial and "vg0 (" not in partial

    # A pool the tenant may not use is refused by the service, on the disk's row, exactly like
    # one that does not exist: the answer does not name it.
    vg0 = StoragePool.objects.get(host=granted["host"], name="vg0")
    response = client.post(
        reverse("ui:vm_create"),
        wizard_post(granted, **{"disk-0-pool": vg0.pk, "disk-0-format": "raw"}),
    )
    assert response.status_code == 400 and "Unknown pool" in main(response)
    assert "vg0" not in main(response)

    response = client.post(reverse("ui:vm_create"), wizard_post(granted, start=None))
    assert response.status_code == 302
    run_tasks()
    vm = VirtualMachine.objects.get(name="ui-vm-01")
    assert vm.tenant == granted["tenant"] and vm.state == "shutoff"


def test_create_from_a_template_prefills_linked_copies(client, granted, run_tasks):
    from vms import services

    source = qcow2_vm(granted["host"], "shutoff")
    source.tenant = granted["tenant"]
    source.save()
    services.vm_make_template(user=granted["admin"], vm=source)
    login(client, granted["operator"])
    page = main(client.get(reverse("ui:vm", args=[source.pk])))
    assert f"{reverse('ui:vm_create')}?template={source.pk}" in page
    assert 'data-power="start"' not in page  # a template does not start

    page = main(client.get(reverse("ui:vm_create") + f"?template={source.pk}"))
    assert "from template" in page
    first = source.disks.filter(device="disk").order_by("target").first()
    assert re.search(rf'<option value="{first.volume_id}"[^>]* selected>', page)
    assert '<option value="linked" selected>' in page

    data = wizard_post(
        granted,
        **{
            "disk-0-source": "template",
            "disk-0-volume": first.volume_id,
            "disk-0-clone": "linked",
            "disk-0-size_gib": "",
            "disk-0-pool": "",
        },
    )
    response = client.post(reverse("ui:vm_create"), data)
    assert response.status_code == 302, main(response)
    run_tasks()
    vm = VirtualMachine.objects.get(name="ui-vm-01")
    assert vm.disks.get(device="disk").volume.backing_path == first.source


# --- roles -----------------------------------------------------------------------------------


def test_power_buttons_per_role(client, granted):
    vm = acme_vm(granted, "running")
    url = reverse("ui:vm", args=[vm.pk])

    login(client, granted["viewer"])
    page = main(client.get(url))
    assert "data-power" not in page and "data-more" not in page
    assert reverse("ui:vm_create") not in page and "Take snapshot" not in main(
        client.get(url + "?tab=snapshots")
    )
    assert "Add disk" not in main(client.get(url + "?tab=hardware"))
    assert "data-create-vm" not in text(client.get(url))

    login(client, granted["member"])
    page = main(client.get(url))
    for action in ("start", "shutdown", "reboot", "stop", "reset", "pause"):
        assert f'data-power="{action}"' in page
    assert "data-more" not in page and reverse("ui:vm_delete", args=[vm.pk]) not in page
    assert "Add disk" not in main(client.get(url + "?tab=hardware"))
    assert "data-create-vm" not in text(client.get(url))

    login(client, granted["operator"])
    page = main(client.get(url))
    assert 'data-power="stop"' in page and "data-more" in page
    assert reverse("ui:vm_delete", args=[vm.pk]) in page
    assert "Add disk" in main(client.get(url + "?tab=hardware"))
    assert "data-create-vm" in text(client.get(url))


def test_only_sensible_power_buttons_are_enabled(client, granted):
    login(client, granted["member"])
    running = main(client.get(reverse("ui:vm", args=[acme_vm(granted, "running").pk])))
    shutoff = main(client.get(reverse("ui:vm", args=[acme_vm(granted, "shutoff").pk])))

    def enabled(page, action):
        tag = re.search(rf'<(?:button|a)[^>]*data-power="{action}"[^>]*>', page).group(0)
        return "disabled" not in tag

    assert not enabled(running, "start") and enabled(running, "stop") and enabled(running, "pause")
    assert enabled(shutoff, "start") and not enabled(shutoff, "stop")
    assert not enabled(shutoff, "shutdown") and not enabled(shutoff, "reboot")


def test_power_posts_map_to_tasks(client, granted, run_tasks):
    login(client, granted["member"])
    vm = acme_vm(granted, "running")

    # Stop asks first: the GET is a confirmation, also as a dialog fragment.
    confirm = client.get(reverse("ui:vm_power", args=[vm.pk, "stop"]), HTTP_HX_REQUEST="true")
    assert confirm.status_code == 200 and "<html" not in text(confirm)
    assert "pulls the plug" in text(confirm) and "btn-danger" in text(confirm)

    response = client.post(reverse("ui:vm_power", args=[vm.pk, "stop"]))
    assert response.status_code == 302 and response["Location"] == reverse("ui:vm", args=[vm.pk])
    task = Task.objects.get(kind="vm.power", vm=vm)
    assert task.params["action"] == "stop"
    run_tasks()
    vm.refresh_from_db()
    assert vm.state == "shutoff"
    dom = get_connection(granted["host"]).lookupByName(vm.name)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF

    # From the dialog, success is a redirect for the script to follow.
    response = client.post(reverse("ui:vm_power", args=[vm.pk, "start"]), HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Redirect"] == reverse("ui:vm", args=[vm.pk])
    run_tasks()
    vm.refresh_from_db()
    assert vm.state == "running"

    # The header's Shutdown posts no options; its menu's dialog does.
    assert client.post(reverse("ui:vm_power", args=[vm.pk, "shutdown"])).status_code == 302
    task = Task.objects.filter(kind="vm.power", vm=vm).latest("pk")
    assert task.params == {"action": "shutdown", "force": False, "timeout": 120}
    run_tasks()
    vm.refresh_from_db()
    assert vm.state == "shutoff"
    client.post(reverse("ui:vm_power", args=[vm.pk, "start"]))
    run_tasks()
    response = client.post(
        reverse("ui:vm_power", args=[vm.pk, "shutdown"]), {"force": "on", "timeout": "30"}
    )
    task = Task.objects.filter(kind="vm.power", vm=vm).latest("pk")
    assert task.params == {"action": "shutdown", "force": True, "timeout": 30}

    # An action the state does not allow comes back as the service's message.
    shutoff = acme_vm(granted, "shutoff")
    response = client.post(reverse("ui:vm_power", args=[shutoff.pk, "reboot"]))
    assert response.status_code == 400 and "Cannot reboot a VM that is shut off" in main(response)
    assert client.post(reverse("ui:vm_power", args=[vm.pk, "explode"])).status_code == 404


def test_busy_vm_says_which_task_and_disables_its_buttons(client, granted):
    vm = acme_vm(granted, "running")
    holder = Task.objects.create(kind="vm.edit", state=TaskState.RUNNING, vm=vm, tenant=vm.tenant)
    VirtualMachine.objects.filter(pk=vm.pk).update(lock=holder)
    login(client, granted["operator"])
    page = main(client.get(reverse("ui:vm", args=[vm.pk])))
    assert f'data-follow-task="{holder.pk}"' in page  # static/js/actions.js follows it
    assert f"task #{holder.pk}" in page
    for tag in re.findall(r'<(?:button|a)[^>]*data-power="[a-z]+"[^>]*>', page):
        assert "disabled" in tag and f"Busy with task #{holder.pk}" in tag
    assert "data-dialog>" not in page.split("data-more", 1)[1].split("</details>", 1)[0]

    response = client.post(reverse("ui:vm_power", args=[vm.pk, "stop"]))
    assert response.status_code == 400
    link = f'<a href="{reverse("ui:task", args=[holder.pk])}">task #{holder.pk}</a>'
    assert "is busy with" in main(response) and link in main(response)


def test_member_gets_403_posting_create_and_delete(client, granted):
    vm = acme_vm(granted, "shutoff")
    login(client, granted["member"])
    assert client.get(reverse("ui:vm_create")).status_code == 403
    assert client.post(reverse("ui:vm_create"), wizard_post(granted)).status_code == 403
    assert client.post(reverse("ui:vm_delete", args=[vm.pk])).status_code == 403
    assert client.post(reverse("ui:vm_clone", args=[vm.pk]), {"name": "x"}).status_code == 403
    assert client.post(reverse("ui:vm_disk_add", args=[vm.pk]), {}).status_code == 403
    login(client, granted["viewer"])
    assert client.post(reverse("ui:vm_power", args=[vm.pk, "start"])).status_code == 403
    assert not VirtualMachine.objects.filter(name="ui-vm-01").exists()
    assert not Task.objects.filter(vm=vm).exists()
    VirtualMachine.objects.get(pk=vm.pk)  # not deleted


# --- hardware --------------------------------------------------------------------------------


def test_hardware_dialogs_map_onto_the_services(client, granted, run_tasks):
    vm = acme_vm(granted, "shutoff")
    login(client, granted["operator"])
    hardware = main(client.get(reverse("ui:vm", args=[vm.pk]) + "?tab=hardware"))
    disk = vm.disks.filter(device="disk", volume__isnull=False).order_by("target").first()
    nic = vm.nics.first()
    for name, args in (
        ("ui:vm_resources", [vm.pk]),
        ("ui:vm_disk_add", [vm.pk]),
        ("ui:vm_disk_grow", [vm.pk, disk.pk]),
        ("ui:vm_disk_remove", [vm.pk, disk.pk]),
        ("ui:vm_nic_add", [vm.pk]),
        ("ui:vm_nic_remove", [vm.pk, nic.pk]),
    ):
        url = reverse(name, args=args)
        assert url in hardware, name
        assert client.get(url).status_code == 200, name
        assert client.get(url, HTTP_HX_REQUEST="true").status_code == 200, name

    # Grow refuses to shrink, with the service's reason, in the dialog.
    grow = reverse("ui:vm_disk_grow", args=[vm.pk, disk.pk])
    response = client.post(grow, {"size_gib": "0.5"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "<html" not in text(response)
    assert "Shrinking is refused" in text(response)
    size = disk.volume.capacity / 1024**3
    assert client.post(grow, {"size_gib": str(size + 2)}).status_code == 302
    assert Task.objects.get(kind="vm.disk_grow", vm=vm).params["target"] == disk.target
    run_tasks()

    response = client.post(
        reverse("ui:vm_disk_add", args=[vm.pk]),
        {
            "source": "new",
            "size_gib": "2",
            "pool": granted["pool"].pk,
            "format": "qcow2",
            "bus": "virtio",
        },
    )
    assert response.status_code == 302, main(response)
    assert Task.objects.get(kind="vm.disk_attach", vm=vm).params["kind"] == "new"
    run_tasks()

    response = client.post(
        reverse("ui:vm_resources", args=[vm.pk]),
        {"name": vm.name, "vcpus": str(vm.vcpus + 1), "memory_mib": "1536"},
    )
    assert response.status_code == 302
    edit = Task.objects.get(kind="vm.edit", vm=vm)
    assert edit.params == {"vcpus": vm.vcpus + 1, "memory_mib": 1536}
    run_tasks()

    response = client.post(
        reverse("ui:vm_nic_add", args=[vm.pk]),
        {"network": granted["lan"].pk, "model": "e1000e", "mac": ""},
    )
    assert response.status_code == 302
    assert Task.objects.get(kind="vm.nic_attach", vm=vm).params["model"] == "e1000e"
    run_tasks()

    disk = vm.disks.get(target=disk.target)  # the edit re-read the VM's devices
    response = client.post(
        reverse("ui:vm_disk_remove", args=[vm.pk, disk.pk]), {"delete_volume": "on"}
    )
    assert response.status_code == 302
    assert Task.objects.get(kind="vm.disk_detach", vm=vm).params["delete_volume"] is True


def test_cdrom_change_and_eject(client, granted, run_tasks):
    login(client, granted["admin"])
    client.post(reverse("ui:vm_create"), wizard_post(granted, start=None))
    run_tasks()
    vm = VirtualMachine.objects.get(name="ui-vm-01")
    url = reverse("ui:vm_cdrom", args=[vm.pk])
    assert reverse("ui:vm_cdrom", args=[vm.pk]) in main(
        client.get(reverse("ui:vm", args=[vm.pk]) + "?tab=hardware")
    )
    assert "No media (eject)" in text(client.get(url))
    assert client.post(url, {"volume": ""}).status_code == 302
    task = Task.objects.filter(kind="vm.cdrom", vm=vm).get()
    assert task.params["path"] == ""
    run_tasks()
    alpine = Volume.objects.get(name="alpine-3.20.iso", pool__host=granted["host"])
    assert client.post(url, {"volume": alpine.pk}).status_code == 302
    assert Task.objects.filter(kind="vm.cdrom", vm=vm).latest("pk").params["path"] == alpine.path


def test_resources_dialog_explains_the_live_limits(client, granted):
    login(client, granted["operator"])
    running = acme_vm(granted, "running")
    page = text(client.get(reverse("ui:vm_resources", args=[running.pk])))
    assert f"hot-plugged up to its maximum of <b>{running.max_vcpus}</b>" in page
    assert "Shut the VM down to rename it." in page
    response = client.post(
        reverse("ui:vm_resources", args=[running.pk]),
        {"vcpus": str(running.max_vcpus + 1), "memory_mib": str(running.memory_mib)},
    )
    assert response.status_code == 400 and "shut it down to go further" in main(response)
    shutoff = acme_vm(granted, "shutoff")
    page = text(client.get(reverse("ui:vm_resources", args=[shutoff.pk])))
    assert "is shut off:" in page and "<b>32</b> vCPUs" in page


# --- snapshots, clone, template, delete ---------------------------------------------------------


def test_snapshot_refusal_is_shown_for_a_raw_disk_vm(client, granted):
    raw = (
        VirtualMachine.objects.filter(
            host=granted["host"], disks__device="disk", disks__format="raw"
        )
        .distinct()
        .first()
    )
    raw.tenant = granted["tenant"]
    raw.save()
    login(client, granted["member"])
    page = main(client.get(reverse("ui:vm", args=[raw.pk]) + "?tab=snapshots"))
    assert (
        "Snapshots are not possible now." in page and "Internal snapshots need qcow2 disks" in page
    )
    assert reverse("ui:vm_snapshot_add", args=[raw.pk]) not in page
    response = client.post(reverse("ui:vm_snapshot_add", args=[raw.pk]), {"name": "s1"})
    assert response.status_code == 200 and not Task.objects.filter(vm=raw).exists()

    fine = qcow2_vm(granted["host"], "shutoff")
    fine.tenant = granted["tenant"]
    fine.save()
    page = main(client.get(reverse("ui:vm", args=[fine.pk]) + "?tab=snapshots"))
    assert "Snapshots are not possible now." not in page
    assert reverse("ui:vm_snapshot_add", args=[fine.pk]) in page


def test_snapshots_tree_take_revert_delete(client, granted, run_tasks):
    vm = qcow2_vm(granted["host"], "shutoff")
    vm.tenant = granted["tenant"]
    vm.save()
    login(client, granted["member"])
    add = reverse("ui:vm_snapshot_add", args=[vm.pk])
    for name in ("base", "patched"):
        response = client.post(add, {"name": name, "description": f"{name} state"})
        assert response.status_code == 302
        assert response["Location"] == reverse("ui:vm", args=[vm.pk]) + "?tab=snapshots"
        run_tasks()
    assert list(Task.objects.filter(vm=vm).values_list("state", flat=True)) == ["succeeded"] * 2

    page = main(client.get(reverse("ui:vm", args=[vm.pk]) + "?tab=snapshots"))
    assert page.index(">base<") < page.index(">patched<") < page.index("NOW")
    patched_row = re.search(r"<tr class=\"snap-current\">(.*?)</tr>", page, re.S).group(1)
    assert ">patched<" in patched_row and "current" in patched_row
    # A child sits one level deeper than its parent.
    depths = [int(d) for d in re.findall(r'class="snap-indent indent-(\d+)"', page)]
    assert depths == [0, 1, 2]

    bad = client.post(add, {"name": "base"})
    assert bad.status_code == 400 and "A snapshot named base exists" in main(bad)

    revert = reverse("ui:vm_snapshot_revert", args=[vm.pk, "base"])
    assert "Everything that changed since" in text(client.get(revert))
    assert client.post(revert).status_code == 302
    assert Task.objects.filter(vm=vm, kind="vm.snapshot_revert").get().params == {"name": "base"}
    run_tasks()
    delete = reverse("ui:vm_snapshot_delete", args=[vm.pk, "patched"])
    assert client.post(delete).status_code == 302
    run_tasks()
    assert list(vm.snapshots.values_list("name", flat=True)) == ["base"]


def test_clone_template_and_delete_from_the_more_menu(client, granted, run_tasks):
    vm = qcow2_vm(granted["host"], "shutoff")
    vm.tenant = granted["tenant"]
    vm.save()
    login(client, granted["operator"])

    running = acme_vm(granted, "running")
    response = client.post(
        reverse("ui:vm_clone", args=[running.pk]), {"name": "c1", "mode": "full"}
    )
    assert response.status_code == 400 and "shut it down before cloning" in main(response)

    response = client.post(reverse("ui:vm_template", args=[vm.pk]))
    assert response.status_code == 302
    vm.refresh_from_db()
    assert vm.is_template

    response = client.post(
        reverse("ui:vm_clone", args=[vm.pk]), {"name": "linked-01", "mode": "linked"}
    )
    clone = VirtualMachine.objects.get(name="linked-01")
    assert response["Location"] == reverse("ui:vm", args=[clone.pk])
    run_tasks()
    clone.refresh_from_db()
    assert clone.lifecycle == "ready" and clone.source_template == vm

    # Deleting the template warns about its linked clone and refuses to delete its volumes.
    page = text(client.get(reverse("ui:vm_delete", args=[vm.pk])))
    assert "Linked clones use this template" in page and "linked-01" in page
    response = client.post(reverse("ui:vm_delete", args=[vm.pk]), {"delete_volumes": "on"})
    assert response.status_code == 400 and "Linked clones (linked-01) use this" in main(response)

    # Without the dialog's script the task's page says how the delete ends.
    response = client.post(reverse("ui:vm_delete", args=[clone.pk]), {"delete_volumes": "on"})
    assert response.status_code == 302
    task = Task.objects.get(kind="vm.delete", vm=clone)
    assert response["Location"] == reverse("ui:task", args=[task.pk])
    run_tasks()
    assert not VirtualMachine.objects.filter(pk=clone.pk).exists()
    with pytest.raises(libvirt.libvirtError):
        get_connection(granted["host"]).lookupByName("linked-01")


# --- tenant quota ------------------------------------------------------------------------------


def test_tenant_quota_bars_render_and_admins_edit_limits(client, granted):
    tenant = granted["tenant"]
    tenant.max_vms = 10
    tenant.max_memory_mib = 65536
    tenant.save()
    vms = VirtualMachine.objects.filter(tenant=tenant)
    login(client, granted["viewer"])
    page = main(client.get(reverse("ui:tenant", args=[tenant.pk])))
    bars = re.findall(r'data-quota="([a-z_]+)"', page)
    assert bars == ["vms", "vcpus", "memory_mib", "disk_gib"]
    assert f"{vms.count()} of 10" in page
    assert f'class="progress-fill w-{vms.count() * 10}"' in page
    assert "64.0 GiB" in page and "No limit set." in page
    assert "sim-01" in page and "default" in page and "lan" in page  # placement
    assert reverse("ui:tenant_edit", args=[tenant.pk]) not in page
    assert client.get(reverse("ui:tenant_edit", args=[tenant.pk])).status_code == 403

    login(client, granted["admin"])
    url = reverse("ui:tenant_edit", args=[tenant.pk])
    assert url in main(client.get(reverse("ui:tenant", args=[tenant.pk])))
    vg0 = StoragePool.objects.get(host=granted["host"], name="vg0")
    response = client.post(
        url,
        {
            "description": "Acme Corp",
            "max_vms": "20",
            "max_vcpus": "",
            "max_memory_mib": "",
            "max_disk_gib": "500",
            "allowed_hosts": [granted["host"].pk],
            "allowed_pools": [granted["pool"].pk, vg0.pk],
            "allowed_networks": [],
        },
    )
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.max_vms, tenant.max_memory_mib, tenant.max_disk_gib) == (20, None, 500)
    assert set(tenant.allowed_pools.all()) == {granted["pool"], vg0}
    assert not tenant.allowed_networks.exists()
    response = client.post(url, {"max_vms": "-1"})
    assert response.status_code == 400 and "greater than or equal to 0" in main(response)


def test_every_new_page_renders_for_the_platform_admin(client, granted):
    login(client, granted["admin"])
    vm = acme_vm(granted, "running")
    tenant = granted["tenant"]
    urls = [
        reverse("ui:vm_create"),
        reverse("ui:vm_create") + f"?tenant={tenant.pk}&host={granted['host'].pk}",
        reverse("ui:vm_create_options") + "?tenant=&host=",
        reverse("ui:tenant", args=[tenant.pk]) + "?tab=summary",
        reverse("ui:tenant_edit", args=[tenant.pk]),
        reverse("ui:vm", args=[vm.pk]) + "?tab=snapshots",
        reverse("ui:vm_clone", args=[vm.pk]),
        reverse("ui:vm_template", args=[vm.pk]),
        reverse("ui:vm_delete", args=[vm.pk]),
        reverse("ui:vm_cdrom", args=[vm.pk]),
        reverse("ui:vm_snapshot_add", args=[vm.pk]),
    ]
    urls += [reverse("ui:vm_power", args=[vm.pk, a]) for a in ("shutdown", "stop", "reset")]
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_wizard_creates_a_vm_with_a_tuning_policy_or_says_why_it_does_not_fit(client, granted):
    ensure_builtins()
    login(client, granted["admin"])
    page = text(client.get(reverse("ui:vm_create")))
    assert 'name="tuning_policy"' in page and "latency-critical (v1)" in page

    # 31 dedicated vCPUs cannot fit the 28 pCPUs outside the housekeeping set: the CPU step
    # says why, and nothing is made
    before = Task.objects.count()
    response = client.post(
        reverse("ui:vm_create"), wizard_post(granted, vcpus="31", tuning_policy="throughput")
    )
    assert response.status_code == 400
    page = main(response)
    assert 'data-start-step="cpu"' in page and "throughput does not fit on" in page
    assert Task.objects.count() == before

    response = client.post(
        reverse("ui:vm_create"),
        wizard_post(granted, name="tuned-01", vcpus="2", max_vcpus="", tuning_policy="throughput"),
    )
    assert response.status_code == 302, main(response)
    vm = VirtualMachine.objects.get(name="tuned-01")
    assert DedicatedCpu.objects.filter(vm=vm, use="vcpu").count() == 2
