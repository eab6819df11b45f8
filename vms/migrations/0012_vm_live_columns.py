from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0011_vm_counts_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="virtualmachine",
            name="cpu_percent",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="virtualmachine",
            name="ip_addresses",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="virtualmachine",
            name="memory_percent",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="virtualmachine",
            name="notes",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="virtualmachine",
            name="sampled_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="virtualmachine",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
