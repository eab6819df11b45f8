"""Indexes for the search box on PostgreSQL: a trigram GIN index on VM names (``icontains``
is ``UPPER(name) LIKE UPPER('%x%')``, which the index serves). SQLite keeps its scan: the
embedded default holds a laptop's inventory, not 50,000 VMs."""

from django.db import migrations

INDEX = "vm_name_trgm"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON vms_virtualmachine "
        "USING gin ((UPPER(name::text)) gin_trgm_ops)"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("vms", "0007_vm_name_validator")]

    operations = [migrations.RunPython(forwards, backwards)]
