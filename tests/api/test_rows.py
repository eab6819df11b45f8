"""The VM list is read as rows (panel.api.rows, vms.api.serializers.vm_rows): its answer must
be what VirtualMachineSerializer gives for the same VMs, field for field, whatever the VM holds
(devices, a lock, a gone date), and cursor pages over rows must walk every VM once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework import serializers

from panel.api.rows import RowShape
from panel.models import Task
from vms.api.serializers import VirtualMachineSerializer
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def _all_pages(api, url: str) -> list[dict]:
    rows = []
    while url:
        resp = api.get(url)
        assert resp.status_code == 200, resp.content
        rows += resp.json()["results"]
        url = resp.json()["next"]
    return rows


def test_list_rows_equal_the_serializer(api, admin_user, synced_host):
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    assert len(vms) > 10 and any(vm.disks.exists() for vm in vms)
    assert any(vm.nics.exists() for vm in vms)
    # Every kind of value a row can hold: a lock, a gone date, tags, a description.
    task = Task.objects.create(kind="vm.power", host=synced_host, vm=vms[0])
    VirtualMachine.objects.filter(pk=vms[0].pk).update(lock=task, tags=["a", "b"])
    VirtualMachine.objects.filter(pk=vms[1].pk).update(
        gone=True, gone_at=timezone.now() - dt.timedelta(hours=3), description="old"
    )

    api.as_user(admin_user)
    pages = _all_pages(api, "/api/vms/?limit=7") + _all_pages(api, "/api/vms/?gone=true")
    listed = {row["id"]: row for row in pages}
    everything = VirtualMachine.objects.select_related("host", "tenant").prefetch_related(
        "disks", "nics"
    )
    expected = {vm.pk: VirtualMachineSerializer(vm).data for vm in everything}
    assert listed.keys() == expected.keys()
    for pk, row in listed.items():
        want = dict(expected[pk])
        assert list(row) == list(want)  # the same keys in the same order
        assert row == want, pk
    assert listed[vms[0].pk]["lock"] == task.pk
    assert listed[vms[1].pk]["gone_at"].endswith("Z")


def test_cursor_pages_over_rows_walk_every_vm_once(api, admin_user, synced_host):
    api.as_user(admin_user)
    walked = _all_pages(api, "/api/vms/?cursor=&limit=5")
    names = [row["name"] for row in walked]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert len(walked) == VirtualMachine.objects.filter(gone=False).count()


def test_a_declared_field_without_a_reader_is_refused():
    class Shape(serializers.ModelSerializer):
        host = serializers.CharField()

        class Meta:
            model = VirtualMachine
            fields = ["id", "host"]

    with pytest.raises(ValueError, match="host"):
        RowShape(Shape)
