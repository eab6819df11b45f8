"""Day-two fixes in the server-rendered console: the wizard's errors at their fields (a disk
larger than the pool's free space, memory in any MiB), the delete dialog that follows its task,
a failed create or delete said where the user looks, the console of a simulated VM, task titles
in the task bar, and adding a host that does not answer."""

from __future__ import annotations

import math
import re

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from hosts.models import Host
from panel.models import Task
from panel.units import GIB
from tests.integration.test_console import _communicator, _session_cookie
from tests.ui.conftest import login, main, text
from tests.ui.test_vm_lifecycle import granted, wizard_post  # noqa: F401 - the fixture
from vms import console
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def _disk_row(page: str) -> str:
    return page[page.index('data-row="disk"') :].split("</tbody>", 1)[0]


# --- the wizard ------------------------------------------------------------------------------


def test_a_disk_larger_than_the_pool_is_refused_at_its_size_field(client, granted):  # noqa: F811
    login(client, granted["admin"])
    free = granted["pool"].available / GIB
    asked = math.ceil(free) + 100
    response = client.post(
        reverse("ui:vm_create"), wizard_post(granted, **{"disk-0-size_gib": str(asked)})
    )
    assert response.status_code == 400
    page = main(response)
    assert 'data-start-step="disks"' in page
    said = f"{asked} GiB asked, {free:.1f} GiB free on pool default.".replace(".0 ", " ")
    assert page.count(said) == 1  # once, in the disk's row
    row = _disk_row(page)
    assert said in row
    assert re.search(r'name="disk-0-size_gib"[^>]*class="num-input is-invalid"', row)
    assert "size_gib" not in re.sub(r'name="[^"]*"', "", page.split("wrow-errors", 1)[1][:400])
    assert not VirtualMachine.objects.filter(name="ui-vm-01").exists()


def test_any_whole_mib_of_memory_is_accepted(client, granted, run_tasks):  # noqa: F811
    login(client, granted["admin"])
    page = main(client.get(reverse("ui:vm_create")))
    memory = re.search(r'<input[^>]*name="memory_mib"[^>]*>', page).group(0)
    assert 'step="1"' in memory and 'min="64"' in memory and 'step="64"' not in page
    response = client.post(
        reverse("ui:vm_create"), wizard_post(granted, memory_mib="1000", max_memory_mib="1001")
    )
    assert response.status_code == 302, main(response)
    run_tasks()
    vm = VirtualMachine.objects.get(name="ui-vm-01")
    assert (vm.memory_mib, vm.max_memory_mib, vm.lifecycle) == (1000, 1001, "ready")


def test_too_little_memory_is_said_once_at_the_field_by_its_label(client, granted):  # noqa: F811
    login(client, granted["admin"])
    response = client.post(reverse("ui:vm_create"), wizard_post(granted, memory_mib="32"))
    page = main(response)
    assert 'data-start-step="memory"' in page
    assert page.count("At least 64 MiB.") == 1
    field = page[page.index('for="id_memory_mib"') :].split("</div>\n</div>", 1)[0]
    assert "Memory (MiB)" in field and "At least 64 MiB." in field


def test_the_wizard_loads_the_field_error_script(client, granted):  # noqa: F811
    login(client, granted["admin"])
    assert "js/fielderrors.js" in text(client.get(reverse("ui:vm_create")))


# --- delete and the pages that follow a task -------------------------------------------------


def test_the_delete_dialog_stays_and_follows_its_task(client, granted, run_tasks):  # noqa: F811
    vm = VirtualMachine.objects.filter(tenant=granted["tenant"], is_template=False).first()
    login(client, granted["admin"])
    response = client.post(reverse("ui:vm_delete", args=[vm.pk]), {}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "HX-Redirect" not in response
    task = Task.objects.get(kind="vm.delete", vm=vm)
    body = text(response)
    assert f'data-follow-task="{task.pk}"' in body
    assert f'data-task-url="/api/tasks/{task.pk}/"' in body
    assert f'data-done-url="/tenants/{vm.tenant_id}/?tab=vms"' in body
    assert f"Delete VM {vm.name}" in body
    run_tasks()
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()


def test_a_busy_vm_page_follows_its_task_and_names_it(client, granted):  # noqa: F811
    vm = VirtualMachine.objects.filter(tenant=granted["tenant"], is_template=False).first()
    holder = Task.objects.create(
        kind="vm.power",
        state="running",
        vm=vm,
        tenant=vm.tenant,
        target=f"vm {vm.name}",
        params={"action": "stop"},
    )
    VirtualMachine.objects.filter(pk=vm.pk).update(lock=holder)
    login(client, granted["admin"])
    page = text(client.get(reverse("ui:vm", args=[vm.pk])))
    assert f'data-follow-task="{holder.pk}"' in page and "js/actions.js" in page
    assert f"Stop {vm.name}" in page
    assert "data-done-url" not in page  # only a delete goes elsewhere when it worked


# --- the console of a simulated VM -----------------------------------------------------------


def test_a_simulated_vms_console_says_there_is_none_before_opening(client, granted):  # noqa: F811
    vm = VirtualMachine.objects.filter(
        tenant=granted["tenant"], state="running", is_template=False
    ).first()
    login(client, granted["admin"])
    page = text(client.get(reverse("ui:vm", args=[vm.pk])))
    tab = re.search(r'<a [^>]*data-tab="console"[^>]*>.*?</a>', page).group(0)
    assert "none on a simulated host" in tab
    page = main(client.get(reverse("ui:vm", args=[vm.pk]) + "?tab=console"))
    assert 'data-simulated="1"' in page
    assert "The simulated host has no console." in page


def test_a_console_socket_of_a_simulated_vm_closes_with_its_sentence(granted, transactional_db):  # noqa: F811
    vm = VirtualMachine.objects.filter(
        tenant=granted["tenant"], state="running", is_template=False
    ).first()
    admin = granted["admin"]
    issued = console.issue_ticket(user=admin, vm=vm, kind="serial")
    cookie = _session_cookie(admin)

    async def refusal():
        comm = _communicator(issued.url, cookie)
        connected, _sub = await comm.connect(timeout=10)
        assert connected
        message = await comm.receive_output(timeout=10)
        await comm.disconnect()
        return message

    message = async_to_sync(refusal)()
    assert message["type"] == "websocket.close"
    assert message["code"] == console.CLOSE_SIMULATED == 4501
    assert message["reason"] == "The simulated host has no console."


def test_every_close_code_has_a_sentence_in_the_page_script():
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "static/js/console.js").read_text()
    for code, sentence in console.CLOSE_SENTENCES.items():
        assert f'{code}: "{sentence}"' in script
    assert "[console closed: " not in script


# --- task titles and host add ----------------------------------------------------------------


def test_the_task_bar_says_what_each_task_does(client, granted):  # noqa: F811
    vm = VirtualMachine.objects.filter(tenant=granted["tenant"], is_template=False).first()
    Task.objects.create(
        kind="vm.power", vm=vm, tenant=vm.tenant, target=f"vm {vm.name}", params={"action": "stop"}
    )
    Task.objects.create(
        kind="vm.snapshot_create",
        vm=vm,
        tenant=vm.tenant,
        target=f"vm {vm.name}",
        params={"name": "before-upgrade"},
    )
    login(client, granted["admin"])
    page = text(client.get(reverse("ui:datacenter")))
    bar = page[page.index('id="taskbar"') :]
    assert f"Stop {vm.name}</a>" in bar
    assert f"Snapshot {vm.name}: before-upgrade</a>" in bar
    assert "Vm power" not in bar


def test_an_unreachable_host_is_not_added_silently(client, admin_user, tmp_path):
    missing = tmp_path / "gone.xml"
    login(client, admin_user)
    form = {"name": "kvm-2", "uri": f"test://{missing}", "description": "", "tags": ""}
    response = client.post(reverse("ui:host_add"), form)
    assert response.status_code == 400
    page = main(response)
    assert f"Paddock could not connect to test://{missing}:" in page
    assert 'name="offline"' in page and "Add it anyway, offline" in page
    assert not Host.objects.filter(name="kvm-2").exists()
    # A first GET offers no such box: only a failed connection does.
    assert 'name="offline"' not in main(client.get(reverse("ui:host_add")))

    response = client.post(reverse("ui:host_add"), {**form, "offline": "on"})
    assert response.status_code == 302
    host = Host.objects.get(name="kvm-2")
    assert host.status == "offline" and host.last_error
    page = text(client.get(response["Location"]))
    assert "Host kvm-2 added offline:" in page
