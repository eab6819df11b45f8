"""Concurrent creates with one VM of quota left: exactly one is accepted (PostgreSQL in CI)."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from hosts.models import Network
from panel.models import Tenant
from vms import services
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 12


def test_concurrent_creates_cannot_pass_the_vm_quota(synced_host, make_member, monkeypatch):
    # Nothing needs to reach the host: what is under test is the check and the insert.
    monkeypatch.setattr("panel.taskrunner.dispatch", lambda *a, **k: None)
    tenant = Tenant.objects.create(name="racers", max_vms=9)
    tenant.allowed_hosts.add(synced_host)
    net = Network.objects.get(host=synced_host, name="lan")
    tenant.allowed_networks.add(net)
    operator = make_member(tenant, "operator")
    # Eight VMs already: one left.
    VirtualMachine.objects.filter(host=synced_host, name__startswith="web-").update(tenant=tenant)
    VirtualMachine.objects.filter(host=synced_host, name__startswith="dns-").update(tenant=tenant)
    used = VirtualMachine.objects.filter(tenant=tenant, gone=False, is_template=False).count()
    extra = VirtualMachine.objects.filter(tenant=tenant).order_by("name")[: max(0, used - 8)]
    VirtualMachine.objects.filter(pk__in=[v.pk for v in extra]).update(tenant=Tenant.get_default())
    assert services.tenant_usage(tenant)["vms"] == 8

    barrier = threading.Barrier(CONCURRENT)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            services.vm_create(
                user=operator,
                name=f"race-{i:02d}",
                tenant=tenant,
                host=synced_host,
                vcpus=1,
                memory_mib=128,
            )
            result = "accepted"
        except ValidationError as exc:
            result = "quota" if "quota" in exc.message_dict else f"other: {exc}"
        except Exception as exc:  # a database error would be a bug too: report it
            result = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["accepted"] + ["quota"] * (CONCURRENT - 1), outcomes
    assert services.tenant_usage(tenant)["vms"] == 9
