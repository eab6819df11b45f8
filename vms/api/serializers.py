"""API shapes of VMs."""

from __future__ import annotations

from rest_framework import serializers

from panel.api.rows import RowShape, group_by
from panel.api.serializers import BriefSerializer, IdField
from panel.units import MAX_VOLUME_GIB
from vms.choices import (
    MAX_DISKS,
    MAX_NICS,
    BootDevice,
    CloneMode,
    DiskBus,
    DiskFormat,
    Firmware,
    MachineType,
    NicModel,
)
from vms.models import Disk, Nic, VirtualMachine
from vms.services import BULK_ACTIONS, MAX_BULK

# Bounds that keep numbers inside the database's 64-bit integers and libvirt's sizes (the
# services check what fits the host); beyond them a request is a 400 with a field message.
MAX_COUNT = 2**31 - 1  # vCPUs and MiB of memory (32-bit columns on PostgreSQL)
MAX_DISK_GIB = MAX_VOLUME_GIB  # the largest volume Paddock creates or grows to


class DiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Disk
        fields = [
            "id", "target", "bus", "device", "source_type", "source", "volume", "format",
            "cache", "io", "readonly", "boot_order", "owned",
        ]  # fmt: skip
        read_only_fields = fields


class NicSerializer(serializers.ModelSerializer):
    class Meta:
        model = Nic
        fields = ["id", "mac", "model", "source_type", "source", "network", "target_dev", "vlan"]
        read_only_fields = fields


class VirtualMachineSerializer(serializers.ModelSerializer):
    host = BriefSerializer(read_only=True)
    tenant = BriefSerializer(read_only=True)
    disks = DiskSerializer(many=True, read_only=True)
    nics = NicSerializer(many=True, read_only=True)

    class Meta:
        model = VirtualMachine
        fields = [
            "id", "name", "uuid", "host", "tenant", "state", "state_reason", "desired_state",
            "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "virt_type", "os_type", "arch",
            "machine", "firmware", "cpu_mode", "cpu_model", "boot_devices", "autostart",
            "persistent", "is_template", "lifecycle", "description", "tags", "gone", "gone_at",
            "synced_at", "lock", "disks", "nics", "created", "updated", "notes",
            "cpu_percent", "memory_percent", "started_at", "ip_addresses", "sampled_at",
        ]  # fmt: skip
        read_only_fields = fields


DISK_ROWS = RowShape(DiskSerializer, nested_paths=["vm_id"])
NIC_ROWS = RowShape(NicSerializer, nested_paths=["vm_id"])


def vm_rows(rows: list[dict]) -> list[dict]:
    """A page of VMs read with ``values(*VM_ROWS.paths)`` in :class:`VirtualMachineSerializer`'s
    shape: their disks and NICs in one query each, no model instances."""
    ids = [row["id"] for row in rows]
    disks = group_by(
        Disk.objects.filter(vm_id__in=ids).order_by("vm_id", "target").values(*DISK_ROWS.paths),
        "vm_id",
        DISK_ROWS,
    )
    nics = group_by(
        Nic.objects.filter(vm_id__in=ids).order_by("vm_id", "id").values(*NIC_ROWS.paths),
        "vm_id",
        NIC_ROWS,
    )
    for row in rows:
        row["_disks"] = disks.get(row["id"], [])
        row["_nics"] = nics.get(row["id"], [])
    return VM_ROWS.many(rows)


def _brief(kind: str):
    def read(row: dict) -> dict | None:
        pk = row[f"{kind}_id"]
        return None if pk is None else {"id": pk, "name": row[f"{kind}__name"]}

    return read


VM_ROWS = RowShape(
    VirtualMachineSerializer,
    nested={
        "host": _brief("host"),
        "tenant": _brief("tenant"),
        "disks": lambda row: row["_disks"],
        "nics": lambda row: row["_nics"],
    },
    nested_paths=["host_id", "host__name", "tenant_id", "tenant__name"],
)


class VirtualMachineUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    # An id, resolved by the view among the tenants the user sees: a missing tenant and one
    # the user may not see get the same answer.
    tenant = IdField(required=False, help_text="Platform admins only")


class DiskSpecSerializer(serializers.Serializer):
    # Bounded by the service, which names the row (disks[0]) in its message.
    size_gib = serializers.FloatField(required=False, min_value=0.001)
    pool = IdField(required=False)
    format = serializers.ChoiceField(choices=DiskFormat.values, required=False)
    bus = serializers.ChoiceField(choices=DiskBus.values, required=False)
    source_volume = IdField(required=False)
    clone = serializers.ChoiceField(choices=CloneMode.values, required=False)

    def validate(self, attrs):
        if attrs.get("source_volume"):
            return attrs
        if attrs.get("size_gib") is None or attrs.get("pool") is None:
            raise serializers.ValidationError(
                "Give size_gib and pool for a new volume, or source_volume to clone one."
            )
        return attrs


class NicSpecSerializer(serializers.Serializer):
    network = IdField()
    mac = serializers.CharField(required=False, allow_blank=True)
    model = serializers.ChoiceField(choices=NicModel.values, required=False)


class VirtualMachineCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    tenant = IdField()
    host = IdField(required=False, help_text="Omit to let Paddock choose")
    vcpus = serializers.IntegerField(min_value=1, max_value=MAX_COUNT)
    max_vcpus = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, required=False)
    memory_mib = serializers.IntegerField(min_value=1, max_value=MAX_COUNT)
    max_memory_mib = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, required=False)
    firmware = serializers.ChoiceField(choices=Firmware.values, required=False)
    machine = serializers.ChoiceField(choices=MachineType.values, required=False)
    virt_type = serializers.ChoiceField(choices=["kvm", "qemu", "test"], required=False)
    cpu_model = serializers.CharField(required=False, allow_blank=True, max_length=64)
    disks = DiskSpecSerializer(many=True, required=False, max_length=MAX_DISKS)
    cdrom = IdField(required=False, allow_null=True, help_text="ISO volume id")
    nics = NicSpecSerializer(many=True, required=False, max_length=MAX_NICS)
    boot = serializers.ListField(
        child=serializers.ChoiceField(choices=BootDevice.values), required=False
    )
    autostart = serializers.BooleanField(required=False)
    start = serializers.BooleanField(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    tuning_policy = serializers.CharField(
        required=False, allow_blank=True, max_length=63,
        help_text="A tuning policy's id or name: placed where it fits, defined tuned",
    )  # fmt: skip


class VirtualMachineEditSerializer(VirtualMachineUpdateSerializer):
    name = serializers.CharField(max_length=63, required=False)
    # Markdown; its length is the service's rule (vms.services.NOTES_MAX_LENGTH).
    notes = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    vcpus = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, required=False)
    memory_mib = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, required=False)
    autostart = serializers.BooleanField(required=False)


class PowerSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        required=False, default=False, help_text="shutdown: stop after the timeout"
    )
    timeout = serializers.IntegerField(required=False, default=120, min_value=5, max_value=3600)


class DiskAttachSerializer(serializers.Serializer):
    size_gib = serializers.FloatField(required=False, min_value=0.001, max_value=MAX_DISK_GIB)
    pool = IdField(required=False)
    format = serializers.ChoiceField(choices=DiskFormat.values, required=False)
    bus = serializers.ChoiceField(choices=DiskBus.values, required=False, default=DiskBus.VIRTIO)
    volume = IdField(required=False, help_text="Attach an existing volume")

    def validate(self, attrs):
        if attrs.get("volume") is None and (
            attrs.get("size_gib") is None or attrs.get("pool") is None
        ):
            raise serializers.ValidationError("Give size_gib and pool, or volume.")
        return attrs


class DiskResizeSerializer(serializers.Serializer):
    size_gib = serializers.FloatField(min_value=0.001, max_value=MAX_DISK_GIB)


class NicAttachSerializer(serializers.Serializer):
    network = IdField()
    mac = serializers.CharField(required=False, allow_blank=True)
    model = serializers.ChoiceField(
        choices=NicModel.values, required=False, default=NicModel.VIRTIO
    )


class CdromSerializer(serializers.Serializer):
    volume = IdField(allow_null=True, help_text="ISO volume id; null ejects")


class SnapshotSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    parent = serializers.CharField(source="parent_name", read_only=True)
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    vm_state = serializers.CharField(read_only=True)
    has_memory = serializers.BooleanField(read_only=True)
    is_current = serializers.BooleanField(read_only=True)
    created = serializers.DateTimeField(read_only=True)
    children = serializers.SerializerMethodField()

    def get_children(self, snap) -> list[str]:
        return sorted(getattr(snap, "children_names", []))


class CloneSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    mode = serializers.ChoiceField(choices=CloneMode.values, default=CloneMode.FULL)


class BulkActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=BULK_ACTIONS)
    ids = serializers.ListField(
        child=IdField(), min_length=1, max_length=MAX_BULK, help_text="VM ids"
    )
    delete_volumes = serializers.BooleanField(
        required=False, default=False, help_text="delete: also delete their volumes"
    )
