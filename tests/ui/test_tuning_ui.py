"""The tuning pages of the console: a VM's Tuning tab (status, plan, fit, apply, proof,
advice), the policy list and editor, and a host's Tuning tab (pCPUs, hugepages, housekeeping).

The simulated host has 2 NUMA nodes x 8 cores x 2 threads; its housekeeping set is the first
core of each node with its sibling (pCPUs 0, 16, 8, 24).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from panel.models import Task
from tests.conftest import grant_host
from tests.ui.conftest import login, main, text
from tuning.knobs import clean
from tuning.models import DedicatedCpu, TuningPolicy, VmTuning
from tuning.profiles import ensure_builtins
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

PINNED = {"cpu": {"placement": "dedicated"}, "numa": {"mode": "strict"}}


@pytest.fixture
def world(synced_host, tenant, acme_vms, make_member):
    ensure_builtins()
    grant_host(tenant, synced_host)
    pinned = TuningPolicy.objects.create(name="pinned", tenant=tenant, knobs=clean(PINNED))
    # shut off: the test driver's live vcpupin knows only 8 host CPUs, the definition all 32
    vm = next(v for v in acme_vms if not v.is_template and v.state == "shutoff")
    return {
        "host": synced_host,
        "vm": vm,
        "pinned": pinned,
        "operator": make_member(tenant, "operator"),
        "viewer": make_member(tenant, "viewer"),
        "tenant_admin": make_member(tenant, "admin"),
    }


def _tab(vm, **query) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{reverse('ui:vm', args=[vm.pk])}?tab=tuning{extra}"


def _form(policy: TuningPolicy, **changes) -> dict:
    """The editor's POST for ``policy``'s knobs with ``changes`` (dotted names)."""
    data = {"name": policy.name, "description": policy.description}
    for group, knobs in policy.knobs.items():
        for key, value in _flat(knobs, f"{group}."):
            data[key] = value
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


def _flat(knobs, prefix):
    for key, value in knobs.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "cpu.topology":
            yield from _flat(value, f"{name}.")
        elif value is None:
            yield name, ""
        elif value is True:
            yield name, "on" if name != "host.ksm" else "true"
        else:
            yield name, value


# --- a VM's tab --------------------------------------------------------------------------------


def test_the_vm_tab_shows_status_and_a_dedicated_plan_with_its_diff(client, world, admin_user):
    login(client, admin_user)
    vm = world["vm"]
    response = client.get(_tab(vm))
    assert response.status_code == 200
    page = main(response)
    assert 'data-tab="tuning"' in text(response)
    assert "Effective policy" in page and "balanced" in page
    assert "Never applied" in page and "Show plan" in page
    assert "No tuning applied yet" in page

    response = client.get(_tab(vm, policy=world["pinned"].pk))
    page = main(response)
    assert response.status_code == 200
    assert "data-diff" in page and "vcpupin" in page
    assert 'class="tn-add"' in page  # + lines coloured
    assert "Fit per host" in page and world["host"].name in page
    assert "data-apply" in page


def test_apply_queues_the_task_and_goes_back_to_the_tab(client, world, run_tasks):
    login(client, world["operator"])
    vm = world["vm"]
    response = client.post(
        reverse("ui:vm_tuning_apply", args=[vm.pk]), {"policy": world["pinned"].pk}
    )
    task = Task.objects.get(vm=vm, kind="vm.tune")
    assert response.status_code == 302
    assert response["Location"] == _tab(vm, task=task.pk)
    assert DedicatedCpu.objects.filter(vm=vm).exists()  # promised with the task
    page = main(client.get(response["Location"]))
    assert f"task #{task.pk}" in page


def test_an_applied_policy_shows_as_applied_with_its_proof(client, world, run_tasks):
    # no pins: the test driver reads back no vcpupin or emulatorpin of a defined domain
    login(client, world["operator"])
    vm = world["vm"]
    response = client.post(reverse("ui:vm_tuning_apply", args=[vm.pk]), {"policy": "dense"})
    assert response.status_code == 302
    run_tasks()
    task = Task.objects.get(vm=vm, kind="vm.tune")
    assert task.state == "succeeded", task.error
    page = main(client.get(_tab(vm)))
    assert "dense <span" in page and "In line with the plan" in page
    assert "data-proof-change" in page and "vcpu_delay_percent" in page


def test_a_refused_apply_shows_the_fit_report(client, world):
    login(client, world["operator"])
    vm = world["vm"]
    world["tenant"] = vm.tenant
    type(vm.tenant).objects.filter(pk=vm.tenant_id).update(max_dedicated_cpus=0)
    response = client.post(
        reverse("ui:vm_tuning_apply", args=[vm.pk]), {"policy": world["pinned"].pk}
    )
    assert response.status_code == 409
    page = main(response)
    assert "does not fit" in page and "quota: tenant acme may hold 0 dedicated" in page
    assert "data-fit" in page
    assert not Task.objects.filter(vm=vm, kind="vm.tune").exists()
    assert not DedicatedCpu.objects.filter(vm=vm).exists()


def test_a_viewer_sees_the_tab_without_apply_and_may_not_post(client, world):
    login(client, world["viewer"])
    vm = world["vm"]
    response = client.get(_tab(vm, policy=world["pinned"].pk))
    assert response.status_code == 200
    page = main(response)
    assert "Fit per host" in page
    assert "data-apply" not in page and "data-diff" not in page
    response = client.post(
        reverse("ui:vm_tuning_apply", args=[vm.pk]), {"policy": world["pinned"].pk}
    )
    assert response.status_code == 403
    assert not Task.objects.filter(vm=vm, kind="vm.tune").exists()


def test_drift_shows_its_details_and_a_reapply_button(client, world, admin_user):
    vm = world["vm"]
    VmTuning.objects.create(
        vm=vm, policy=world["pinned"], plan={"domain": {"vcpupin": {"0": "2"}}},
        drift=True, drift_details=[{"what": "vcpupin 0", "expected": "2", "actual": "2-3"}],
    )  # fmt: skip
    login(client, admin_user)
    page = main(client.get(_tab(vm)))
    assert "Drifted" in page and "vcpupin 0" in page and "2-3" in page
    assert "data-reapply" in page


def test_another_tenants_vm_is_not_found(client, world, globex_vms):
    login(client, world["operator"])
    other = next(v for v in globex_vms if not v.is_template)
    assert client.get(_tab(other)).status_code == 404
    response = client.post(reverse("ui:vm_tuning_apply", args=[other.pk]), {"policy": "balanced"})
    assert response.status_code == 404


# --- policies ----------------------------------------------------------------------------------


def test_the_policy_list_shows_builtins_with_copy(client, world, admin_user):
    login(client, admin_user)
    response = client.get(reverse("ui:tuning_policy_list"))
    assert response.status_code == 200
    page = main(response)
    for name in ("balanced", "latency-critical", "throughput", "dense", "pinned"):
        assert f'data-policy="{name}"' in page
    assert "built-in" in page and "Copy" in page and "acme" in page


def test_a_viewer_lists_policies_without_editing(client, world):
    login(client, world["viewer"])
    page = main(client.get(reverse("ui:tuning_policy_list")))
    assert 'data-policy="pinned"' in page and "New policy" not in page and "Delete" not in page
    pinned = world["pinned"]
    page = main(client.get(reverse("ui:tuning_policy", args=[pinned.pk])))
    assert "Read-only" in page and "data-save-policy" not in page
    response = client.post(reverse("ui:tuning_policy", args=[pinned.pk]), _form(pinned))
    assert response.status_code == 403


def test_a_builtin_is_read_only(client, world, admin_user):
    login(client, admin_user)
    balanced = TuningPolicy.objects.get(name="balanced", tenant__isnull=True)
    response = client.get(reverse("ui:tuning_policy", args=[balanced.pk]))
    assert response.status_code == 200
    page = main(response)
    assert "Built-in profiles are read-only" in page and "data-save-policy" not in page
    assert 'name="cpu.placement"' in page and "disabled" in page
    response = client.post(reverse("ui:tuning_policy", args=[balanced.pk]), _form(balanced))
    assert response.status_code == 403


def test_a_new_policy_is_created_from_the_knob_form(client, world):
    login(client, world["tenant_admin"])
    response = client.get(reverse("ui:tuning_policy_new"))
    assert response.status_code == 200
    page = main(response)
    for group in ("cpu", "numa", "memory", "disk", "network", "host"):
        assert f'data-group="{group}"' in page
    assert "dedicated-isolate-siblings" in page and 'name="disk.throttle.total_iops_sec"' in page
    balanced = TuningPolicy.objects.get(name="balanced", tenant__isnull=True)
    data = _form(balanced, name="fast", description="pinned fast", tenant=world["vm"].tenant_id)
    data.update({"cpu.placement": "dedicated", "numa.mode": "strict", "cpu.iothreads": "1",
                 "disk.iothread": "on", "disk.queues": "4", "cpu.topology": "auto"})  # fmt: skip
    response = client.post(reverse("ui:tuning_policy_new"), data)
    assert response.status_code == 302, main(response)
    policy = TuningPolicy.objects.get(name="fast")
    assert policy.tenant_id == world["vm"].tenant_id and policy.version == 1
    assert policy.knobs["cpu"]["placement"] == "dedicated"
    assert policy.knobs["disk"]["queues"] == 4 and policy.knobs["disk"]["iothread"] is True
    assert policy.knobs["memory"]["balloon"]["enabled"] is True


def test_a_bad_knob_is_shown_at_its_field_and_creates_nothing(client, world):
    login(client, world["tenant_admin"])
    balanced = TuningPolicy.objects.get(name="balanced", tenant__isnull=True)
    data = _form(balanced, name="broken", tenant=world["vm"].tenant_id)
    data.update({"disk.io": "native", "disk.cache": "writeback"})
    response = client.post(reverse("ui:tuning_policy_new"), data)
    assert response.status_code == 400
    page = main(response)
    field = page[page.index('name="disk.io"') :]
    field = field[: field.index("</div>\n</div>")]
    assert "io=native needs cache=none" in field
    assert not TuningPolicy.objects.filter(name="broken").exists()


def test_editing_makes_a_new_version_and_the_topology_error_lands_on_its_field(
    client, world, admin_user
):
    login(client, admin_user)
    pinned = world["pinned"]
    url = reverse("ui:tuning_policy", args=[pinned.pk])
    response = client.post(url, _form(pinned, **{"cpu.topology": "sockets=1, cores=0"}))
    assert response.status_code == 400
    assert "cpu.topology.cores" in main(response)
    pinned.refresh_from_db()
    assert pinned.version == 1
    response = client.post(url, _form(pinned, **{"network.queues": "vcpus"}))
    assert response.status_code == 302
    pinned.refresh_from_db()
    assert pinned.version == 2 and pinned.knobs["network"]["queues"] == "vcpus"


def test_copy_and_delete(client, world, admin_user):
    login(client, admin_user)
    latency = TuningPolicy.objects.get(name="latency-critical", tenant__isnull=True)
    url = reverse("ui:tuning_policy_copy", args=[latency.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"name": "my-latency", "tenant": ""})
    assert response.status_code == 302
    copy = TuningPolicy.objects.get(name="my-latency")
    assert copy.knobs == latency.knobs and not copy.builtin and copy.tenant_id is None
    response = client.post(url, {"name": "my-latency", "tenant": ""})
    assert response.status_code == 400 and "exists" in main(response)

    delete = reverse("ui:tuning_policy_delete", args=[copy.pk])
    assert client.get(delete).status_code == 200
    assert client.post(delete).status_code == 302
    assert not TuningPolicy.objects.filter(pk=copy.pk).exists()
    assert client.post(reverse("ui:tuning_policy_delete", args=[latency.pk])).status_code == 403


def test_a_policy_in_use_is_not_deleted(client, world, admin_user):
    VmTuning.objects.create(vm=world["vm"], policy=world["pinned"])
    login(client, admin_user)
    response = client.post(reverse("ui:tuning_policy_delete", args=[world["pinned"].pk]))
    assert response.status_code == 400 and "detach it first" in main(response)
    assert TuningPolicy.objects.filter(pk=world["pinned"].pk).exists()


# --- a host's tab ------------------------------------------------------------------------------


def test_the_host_tab_shows_pcpus_by_node_and_core_and_hugepages(client, world, admin_user):
    vm = world["vm"]
    login(client, admin_user)
    client.post(reverse("ui:vm_tuning_apply", args=[vm.pk]), {"policy": world["pinned"].pk})
    held = sorted(DedicatedCpu.objects.filter(vm=vm).values_list("cpu", flat=True))
    assert held
    response = client.get(f"{reverse('ui:host', args=[world['host'].pk])}?tab=tuning")
    assert response.status_code == 200
    page = main(response)
    assert 'data-tuning-node="0"' in page and 'data-tuning-node="1"' in page
    assert page.count('class="tn-core"') == 16
    cpu = page[page.index(f'data-cpu="{held[0]}"') :][:400]
    assert vm.name in cpu and f"/vms/{vm.pk}/" in cpu
    assert "housekeeping" in page[page.index('data-cpu="0"') :][:200]
    assert "Hugepages per node" in page and "data-save-housekeeping" in page


def test_housekeeping_is_set_and_refused_at_the_field(client, world, admin_user):
    host = world["host"]
    login(client, admin_user)
    url = reverse("ui:host_tuning_housekeeping", args=[host.pk])
    response = client.post(url, {"housekeeping": "0-1,16-17"})
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.housekeeping_cpus == [0, 1, 16, 17]
    response = client.post(url, {"housekeeping": "0,999"})
    assert response.status_code == 400
    assert "has no pCPU 999" in main(response)
    host.refresh_from_db()
    assert host.housekeeping_cpus == [0, 1, 16, 17]


def test_a_tenant_user_has_no_host_tab_and_may_not_set_housekeeping(client, world):
    login(client, world["tenant_admin"])
    host = world["host"]
    assert client.get(f"{reverse('ui:host', args=[host.pk])}?tab=tuning").status_code == 403
    url = reverse("ui:host_tuning_housekeeping", args=[host.pk])
    assert client.post(url, {"housekeeping": "0"}).status_code == 403
    assert VirtualMachine.objects.filter(pk=world["vm"].pk).exists()


def test_the_tuning_tab_says_drift_beside_its_label(client, admin_user, synced_host):
    vm = VirtualMachine.objects.filter(host=synced_host).order_by("name").first()
    client.force_login(admin_user)
    url = f"/vms/{vm.pk}/?tab=summary"
    page = client.get(url).content.decode()
    assert 'data-tab="tuning">' in page and 'tab-count">drift' not in page
    VmTuning.objects.update_or_create(vm=vm, defaults={"drift": True, "plan": {"domain": {}}})
    page = client.get(url).content.decode()
    tab = page[page.index('data-tab="tuning"') :][:300]
    assert '<span class="tab-count">drift</span>' in tab
