"""A VM is its UUID across hosts: one row per UUID, then a unique constraint on it.

Rows that share a UUID (the same domain imported once per host it appeared on) are merged into
one: the newest row that is not gone (the newest of all when every one is gone) is kept, and
the tasks and linked clones of the others point at it before they are deleted, so no task
history is lost.
"""

from django.db import migrations, models


def merge_duplicate_uuids(apps, schema_editor):
    VirtualMachine = apps.get_model("vms", "VirtualMachine")
    Task = apps.get_model("panel", "Task")
    duplicated = (
        VirtualMachine.objects.values("uuid")
        .annotate(rows=models.Count("pk"))
        .filter(rows__gt=1)
        .values_list("uuid", flat=True)
    )
    for uuid in list(duplicated):
        rows = list(
            VirtualMachine.objects.filter(uuid=uuid).order_by(
                "gone", models.F("synced_at").desc(nulls_last=True), "-pk"
            )
        )
        keep, others = rows[0], [row.pk for row in rows[1:]]
        Task.objects.filter(vm_id__in=others).update(vm_id=keep.pk)
        VirtualMachine.objects.filter(source_template_id__in=others).update(
            source_template_id=keep.pk
        )
        VirtualMachine.objects.filter(pk__in=others).delete()
    if schema_editor.connection.vendor == "postgresql":
        # Check the deferred foreign keys now: PostgreSQL alters no table with pending
        # trigger events in the same transaction.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0006_host_kvm_note"),
        ("panel", "0004_tenant_name_validator"),
        ("vms", "0005_volume_owners"),
    ]

    operations = [
        migrations.RunPython(merge_duplicate_uuids, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="virtualmachine",
            name="vm_unique_host_uuid",
        ),
        migrations.AlterField(
            model_name="virtualmachine",
            name="uuid",
            field=models.UUIDField(),
        ),
        migrations.AddConstraint(
            model_name="virtualmachine",
            constraint=models.UniqueConstraint(
                fields=("uuid",),
                name="vm_unique_uuid",
                violation_error_message="A virtual machine with this UUID already exists.",
            ),
        ),
    ]
