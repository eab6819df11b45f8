"""Tuning in a real browser: a VM's Tuning tab shows the plan of a chosen policy with its
coloured XML diff, the policy editor puts a bad knob's error at its field, and a host's Tuning
tab draws its pCPUs by node and core with who holds them. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from django.db import transaction
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER, log_in, shot
from tuning import ledger, services
from tuning.models import VmTuning
from tuning.profiles import ensure_builtins
from tuning.topology import HostTopology
from vms.models import VirtualMachine

pytestmark = BROWSER

PINNED = {"cpu": {"placement": "dedicated-isolate-siblings", "emulator": "isolate"},
          "numa": {"mode": "strict"},
          "memory": {"hugepages": "2M", "balloon": {"enabled": False}}}  # fmt: skip


@pytest.fixture
def page(live_server, open_page):
    """These pages need no websocket: pytest-django's WSGI live server serves them."""
    return open_page()


def _vms(host, n):
    return list(
        VirtualMachine.objects.filter(host=host, state="shutoff", is_template=False)
        .exclude(disks__isnull=True)
        .order_by("name")[:n]
    )


def test_vm_tab_plan_policy_editor_and_host_pcpus(live_host, live_server, page, admin_user):
    ensure_builtins()
    pinned = services.create_policy(
        admin_user, name="pinned", knobs=PINNED, description="Whole cores, strict NUMA."
    )
    vm, *others = _vms(live_host, 3)
    base = live_server.url
    log_in(page, base)
    page.set_viewport_size({"width": 1440, "height": 2000})  # the whole tab in one screenshot

    # the VM's Tuning tab: choose a policy, Show plan, read the diff
    page.goto(f"{base}/vms/{vm.pk}/?tab=tuning")
    expect(page.locator("[data-effective-policy]")).to_have_text("balanced")
    page.select_option("#tuning-policy", str(pinned.pk))
    page.click("[data-show-plan]")
    diff = page.locator("[data-diff]")
    expect(diff).to_contain_text("vcpupin")
    expect(diff.locator(".tn-add").first).to_be_visible()
    expect(page.locator("[data-fit]")).to_contain_text(live_host.name)
    expect(page.locator("[data-apply]")).to_be_enabled()
    shot(page, "tuning-vm", full_page=True)

    # the editor: a bad combination is refused at its field, nothing is created
    page.goto(f"{base}/tuning/policies/new/")
    page.fill("#id_name", "broken")
    page.select_option('[name="disk.io"]', "native")
    page.select_option('[name="disk.cache"]', "writeback")
    page.click("[data-save-policy]")
    error = page.locator('[data-group="disk"] .field.has-error .field-error')
    expect(error).to_contain_text("io=native needs cache=none")
    shot(page, "tuning-editor", full_page=True)

    # the host's tab: pCPUs promised to two VMs, by node and core
    with transaction.atomic():
        topo = HostTopology.from_host(live_host)
        for other in others:
            plan = services.plan_vm(admin_user, other, pinned)
            ledger.reserve(other, live_host, topo, plan.allocations)
    page.goto(f"{base}/hosts/{live_host.pk}/?tab=tuning")
    expect(page.locator("[data-tuning-node]")).to_have_count(2)
    expect(page.locator("[data-tuning-node] .tn-cpu.tn-hk")).to_have_count(4)
    expect(page.locator("[data-tuning-node] .tn-cpu.tn-vm").first).to_contain_text(others[0].name)
    shot(page, "tuning-host", full_page=True)

    page.goto(f"{base}/tuning/policies/")
    expect(page.locator('[data-policy="pinned"]')).to_be_visible()
    shot(page, "tuning-policies")

    # a drifted VM: the tab's label says so, the tab lists the difference and offers re-apply
    VmTuning.objects.update_or_create(
        vm=vm,
        defaults={"policy": pinned, "applied_version": pinned.versions.first(),
                  "plan": {"domain": {"vcpupin": {"0": "1"}}}, "drift": True,
                  "drift_details": [{"what": "vcpupin 0", "expected": "1", "actual": "0"}]},
    )  # fmt: skip
    page.goto(f"{base}/vms/{vm.pk}/?tab=tuning")
    expect(page.locator('[data-tab="tuning"] .tab-count')).to_have_text("drift")
    expect(page.locator("[data-drift]")).to_contain_text("vcpupin 0")
    shot(page, "tuning-vm-drift")
