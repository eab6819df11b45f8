"""Storage pool page for platform admins: create, grow, delete and upload volumes through
hosts.services, with the service's refusals kept in the dialog."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse

from hosts.driver.connection import get_connection
from hosts.models import StoragePool, Volume
from panel import taskrunner
from panel.choices import Role, TaskState
from panel.models import Task
from tests.ui.conftest import text

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def pool(synced_host):
    return StoragePool.objects.get(host=synced_host, name="default")


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def libvirt_volume(host, name: str):
    return get_connection(host).storagePoolLookupByName("default").storageVolLookupByName(name)


def test_create_volume_queues_a_task_that_creates_it_in_libvirt(admin, pool, run_tasks):
    url = reverse("ui:volume_create", args=[pool.pk])
    page = admin.get(url)
    assert page.status_code == 200
    assert 'name="format"' in text(page)

    response = admin.post(url, {"name": "scratch-01.qcow2", "size_gib": "2", "format": "qcow2"})
    assert response.status_code == 302
    task = Task.objects.get(kind="volume.create")
    # Back to the pool, which follows the task and draws its volumes again when it ends.
    assert response["Location"] == f"{reverse('ui:pool', args=[pool.pk])}?task={task.pk}"
    assert task.params["name"] == "scratch-01.qcow2"

    landing = admin.get(response["Location"])
    assert f'href="{reverse("ui:task", args=[task.pk])}"' in text(landing)
    assert f'data-follow-task="{task.pk}"' in text(landing)

    run_tasks()
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED, task.error
    vol = libvirt_volume(pool.host, "scratch-01.qcow2")
    assert vol.info()[1] == 2 * 1024**3
    assert Volume.objects.filter(pool=pool, name="scratch-01.qcow2", gone=False).exists()


def test_create_in_the_dialog_redirects_with_hx_redirect(admin, pool):
    url = reverse("ui:volume_create", args=[pool.pk])
    dialog = admin.get(url, **HX)
    assert 'class="dialog-head' in text(dialog)
    assert "<html" not in text(dialog)

    response = admin.post(url, {"name": "dlg-01.raw", "size_gib": "1", "format": "raw"}, **HX)
    assert response.status_code == 204
    task = Task.objects.get(kind="volume.create")
    assert response["HX-Redirect"] == f"{reverse('ui:pool', args=[pool.pk])}?task={task.pk}"


def test_duplicate_name_re_renders_the_dialog_with_the_field_error(admin, pool):
    existing = Volume.objects.filter(pool=pool, gone=False).first()
    response = admin.post(
        reverse("ui:volume_create", args=[pool.pk]),
        {"name": existing.name, "size_gib": "1", "format": "qcow2"},
        **HX,
    )
    assert response.status_code == 400
    body = text(response)
    assert 'class="dialog-head' in body
    assert "field has-error" in body
    assert f"Pool default has a volume named {existing.name}." in body
    assert not Task.objects.filter(kind="volume.create").exists()


def test_logical_pools_take_no_format(admin, pool):
    StoragePool.objects.filter(pk=pool.pk).update(pool_type="logical")
    page = admin.get(reverse("ui:volume_create", args=[pool.pk]))
    assert 'name="format"' not in text(page)


def test_delete_of_a_vms_disk_shows_the_refusal(admin, pool):
    disk_volume = Volume.objects.filter(pool=pool, disks__vm__gone=False).distinct().first()
    vm_name = disk_volume.disks.first().vm.name
    url = reverse("ui:volume_delete", args=[disk_volume.pk])
    assert "Delete volume" in text(admin.get(url, **HX))

    response = admin.post(url, {}, **HX)
    assert response.status_code == 400
    assert f"Volume {disk_volume.name} is a disk of VM {vm_name}." in text(response)
    assert not Task.objects.filter(kind="volume.delete").exists()


def test_delete_of_a_free_volume_queues_the_task(admin, pool):
    volume = Volume.objects.get(pool=pool, name="debian-12-base.qcow2")
    response = admin.post(reverse("ui:volume_delete", args=[volume.pk]))
    assert response.status_code == 302
    task = Task.objects.get(kind="volume.delete")
    assert task.params["path"] == volume.path


def test_a_busy_volume_says_which_task_holds_it(admin, admin_user, pool):
    volume = Volume.objects.get(pool=pool, name="debian-12-base.qcow2")
    holder = taskrunner.create_task(
        kind="volume.grow", user=admin_user, host=pool.host, target="x", lock=[volume]
    )
    response = admin.post(reverse("ui:volume_delete", args=[volume.pk]), **HX)
    assert response.status_code == 400
    assert (
        f'is busy with <a href="{reverse("ui:task", args=[holder.pk])}">task #{holder.pk}</a>'
        in text(response)
    )
    page = text(admin.get(reverse("ui:pool", args=[pool.pk]) + "?q=debian-12-base"))
    assert f'title="Busy with task #{holder.pk}"' in page


def test_grow_refuses_to_shrink_with_the_services_message(admin, pool):
    volume = Volume.objects.get(pool=pool, name="debian-12-base.qcow2")
    url = reverse("ui:volume_grow", args=[volume.pk])
    assert 'value="20.0"' in text(admin.get(url))
    response = admin.post(url, {"size_gib": "10"}, **HX)
    assert response.status_code == 400
    assert "Shrinking is refused: debian-12-base.qcow2 is 20 GiB." in text(response)
    assert not Task.objects.filter(kind="volume.grow").exists()


def test_upload_form_streams_to_the_api(admin, pool):
    body = text(admin.get(reverse("ui:volume_upload", args=[pool.pk]), **HX))
    assert 'type="file"' in body
    assert f'data-upload-url="/api/storage-pools/{pool.pk}/upload/"' in body
    page = text(admin.get(reverse("ui:pool", args=[pool.pk])))
    assert "/static/js/upload.js" in page  # a static file: no inline script under the CSP
    script = (settings.BASE_DIR / "static" / "js" / "upload.js").read_text()
    assert "X-CSRFToken" in script
    assert 'upload.addEventListener("progress"' in script


def test_pool_page_shows_backing_depth_backing_file_and_actions(admin, pool):
    Volume.objects.filter(pool=pool, name="debian-12-base.qcow2").update(
        backing_depth=3, backing_path="/var/lib/libvirt/images/golden.qcow2"
    )
    volume = Volume.objects.get(pool=pool, name="debian-12-base.qcow2")
    page = text(admin.get(reverse("ui:pool", args=[pool.pk]) + "?q=debian-12-base"))
    assert "Chain depth" in page
    assert "Backing file" in page
    assert '<td class="num" data-col="backing-depth" title="3 images in the chain">3</td>' in page
    assert "/var/lib/libvirt/images/golden.qcow2" in page
    assert reverse("ui:volume_create", args=[pool.pk]) in page
    assert reverse("ui:volume_upload", args=[pool.pk]) in page
    assert reverse("ui:volume_grow", args=[volume.pk]) in page
    assert reverse("ui:volume_delete", args=[volume.pk]) in page


def test_pool_page_links_the_vm_using_a_volume(admin, pool):
    disk_volume = Volume.objects.filter(pool=pool, disks__vm__gone=False).distinct().first()
    vm = disk_volume.disks.first().vm
    page = text(admin.get(reverse("ui:pool", args=[pool.pk]) + f"?q={disk_volume.name}"))
    assert f'<a href="{reverse("ui:vm", args=[vm.pk])}">{vm.name}</a>' in page


def test_non_admins_get_403(client, pool, tenant, make_member):
    volume = Volume.objects.filter(pool=pool).first()
    client.force_login(make_member(tenant, Role.ADMIN))
    urls = [
        reverse("ui:volume_create", args=[pool.pk]),
        reverse("ui:volume_upload", args=[pool.pk]),
        reverse("ui:volume_grow", args=[volume.pk]),
        reverse("ui:volume_delete", args=[volume.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"name": "x", "size_gib": "1"}).status_code == 403, url
    assert not Task.objects.filter(kind__startswith="volume.").exists()
