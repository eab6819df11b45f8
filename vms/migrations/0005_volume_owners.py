"""Give existing volumes their owners, and keep ISO images offered as they were.

A volume that is a disk of a VM belongs to that VM's tenant. ISO images were offered to every
tenant granted their pool; they stay offered, now as published images.
"""

from django.db import migrations
from django.db.models import Q


def forwards(apps, schema_editor):
    Disk = apps.get_model("vms", "Disk")
    Volume = apps.get_model("hosts", "Volume")
    Volume.objects.filter(Q(format="iso") | Q(name__iendswith=".iso")).update(published=True)
    rows = (
        Disk.objects.filter(volume__isnull=False, device="disk", vm__gone=False)
        .values_list("volume_id", "vm__tenant_id")
        .order_by("vm_id")
    )
    by_tenant: dict[int, set[int]] = {}
    for volume_id, tenant_id in rows:
        by_tenant.setdefault(tenant_id, set()).add(volume_id)
    for tenant_id, ids in by_tenant.items():
        Volume.objects.filter(pk__in=ids, tenant__isnull=True, published=False).update(
            tenant_id=tenant_id
        )


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0004_consoleticket"),
        ("hosts", "0005_volume_owner_published"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
