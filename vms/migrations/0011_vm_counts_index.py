from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0010_placement_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="virtualmachine",
            index=models.Index(
                condition=models.Q(("gone", False)),
                fields=["tenant", "state"],
                include=("vcpus", "memory_mib"),
                name="vm_counts",
            ),
        ),
    ]
