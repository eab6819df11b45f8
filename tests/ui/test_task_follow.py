"""Pages that follow a task: the pool page named ``?task=`` follows a volume task of its host
(and ignores anything else), a deleted volume leaves its list, the VM page's banner has a
Cancel button and a Stop that stays enabled over a pending shutdown."""

from __future__ import annotations

import re

import pytest
from django.db import transaction
from django.urls import reverse

from hosts.models import StoragePool, Volume
from panel import taskrunner
from panel.choices import TaskState
from panel.models import Task
from tests.ui.conftest import text
from vms import services as vm_services
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(synced_host):
    return StoragePool.objects.get(host=synced_host, name="default")


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize("raw", ["abc", "-1", "9" * 40, "1e3", "", "\u00b2", "\u0663"])
def test_a_pool_page_ignores_a_task_it_cannot_follow(admin, pool, raw):
    page = admin.get(reverse("ui:pool", args=[pool.pk]), {"task": raw})
    assert page.status_code == 200
    assert "data-follow-task" not in text(page)


def test_a_pool_page_follows_only_volume_tasks_of_its_host(admin, pool, synced_host):
    with transaction.atomic():
        sync = taskrunner.create_task(kind="host.sync", host=synced_host, target="host x")
    page = text(admin.get(reverse("ui:pool", args=[pool.pk]), {"task": sync.pk}))
    assert "data-follow-task" not in page


def test_a_deleted_volume_leaves_the_pool_list_and_is_kept_as_gone(admin, pool, run_tasks):
    volume = Volume.objects.filter(pool=pool, gone=False, disks__isnull=True).first()
    response = admin.post(reverse("ui:volume_delete", args=[volume.pk]), {"confirm": "on"})
    assert response.status_code == 302, text(response)
    task = Task.objects.get(kind="volume.delete")
    following = text(admin.get(response["Location"]))
    assert f'data-follow-task="{task.pk}"' in following and "data-cancel-task" in following
    run_tasks()
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    page = text(admin.get(response["Location"]))
    listed = page.split('data-refresh="volumes"', 1)[1].split("</section>", 1)[0]
    assert volume.name not in listed
    assert Volume.objects.get(pk=volume.pk).gone  # its row stays, for history
    assert 'data-task-state="succeeded"' in page  # the banner says how it ended


def test_stop_stays_enabled_over_a_pending_shutdown_and_the_banner_can_cancel(
    admin, admin_user, synced_host
):
    vm = VirtualMachine.objects.filter(host=synced_host, state="running").first()
    task = vm_services.vm_power(user=admin_user, vm=vm, action="shutdown")
    page = text(admin.get(reverse("ui:vm", args=[vm.pk])))
    assert f'data-cancel-task="{task.pk}"' in page
    tags = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<(?:button|a)[^>]*data-power="([a-z]+)"[^>]*>', page)
    }
    assert "disabled" not in tags["stop"]
    assert "disabled" in tags["reboot"] and "disabled" in tags["shutdown"]
