"""Storage through the API on the real libvirtd: create, grow, delete, streamed upload."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from hosts.models import Volume
from panel.models import Task
from tests.conftest import run_queued_tasks

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
GIB = 1024**3


def _run(response) -> Task:
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "succeeded", task.error
    return task


def test_volume_create_grow_delete(api, lab):
    client = api.as_user(lab["admin"])
    task = _run(
        client.post(
            "/api/volumes/",
            {"pool": lab["pool"].pk, "name": "data.qcow2", "size_gib": 1, "format": "qcow2"},
            format="json",
        )
    )
    path = task.result["path"]
    info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", "-U", path]))
    assert info["format"] == "qcow2" and info["virtual-size"] == GIB
    vol = Volume.objects.get(path=path)
    assert vol.capacity == GIB and vol.backing_depth == 1

    dup = client.post(
        "/api/volumes/",
        {"pool": lab["pool"].pk, "name": "data.qcow2", "size_gib": 1},
        format="json",
    )
    assert dup.status_code == 400 and "name" in dup.json()

    shrink = client.post(f"/api/volumes/{vol.pk}/resize/", {"size_gib": 0.5}, format="json")
    assert shrink.status_code == 400 and "Shrinking is refused" in str(shrink.json())
    _run(client.post(f"/api/volumes/{vol.pk}/resize/", {"size_gib": 2}, format="json"))
    assert Volume.objects.get(pk=vol.pk).capacity == 2 * GIB

    _run(client.delete(f"/api/volumes/{vol.pk}/"))
    assert not os.path.exists(path)
    assert Volume.objects.get(pk=vol.pk).gone is True


def test_upload_streams_an_iso_into_the_pool(api, lab):
    client = api.as_user(lab["admin"])
    payload = os.urandom(3 * 1024 * 1024 + 123)
    response = client.generic(
        "POST",
        f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=tools.iso&volume_format=iso",
        payload,
        content_type="application/octet-stream",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "tools.iso" and body["capacity"] == len(payload)
    with open(body["path"], "rb") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(payload).digest()
    task = Task.objects.get(kind="volume.upload")
    assert task.state == "succeeded"


def test_upload_larger_than_the_pool_is_refused_before_reading(api, lab):
    client = api.as_user(lab["admin"])
    response = client.generic(
        "POST",
        f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=huge.iso",
        b"x" * 10,
        content_type="application/octet-stream",
        CONTENT_LENGTH=str(1024**5),
    )
    assert response.status_code == 400 and "does not fit" in str(response.json())
    assert not Volume.objects.filter(name="huge.iso").exists()


def test_volume_in_use_cannot_be_deleted(api, lab):
    client = api.as_user(lab["admin"])
    body = client.post(
        "/api/vms/",
        {
            "name": f"{lab['prefix']}holder",
            "tenant": lab["tenant"].pk,
            "host": lab["host"].pk,
            "vcpus": 1,
            "memory_mib": 64,
            "disks": [{"size_gib": 1, "pool": lab["pool"].pk}],
        },
        format="json",
    ).json()
    run_queued_tasks()
    vol = Volume.objects.get(disks__vm_id=body["vm"]["id"])
    response = client.delete(f"/api/volumes/{vol.pk}/")
    assert response.status_code == 400 and "holder" in str(response.json())


def test_tenant_users_cannot_touch_volumes(api, lab, make_member):
    operator = make_member(lab["tenant"], "operator")
    response = api.as_user(operator).post(
        "/api/volumes/", {"pool": lab["pool"].pk, "name": "x.raw", "size_gib": 1}, format="json"
    )
    assert response.status_code == 403
