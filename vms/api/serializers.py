"""API shapes of VMs."""

from __future__ import annotations

from rest_framework import serializers

from panel.api.serializers import BriefSerializer
from panel.models import Tenant
from vms.models import Disk, Nic, VirtualMachine


class DiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Disk
        fields = [
            "id", "target", "bus", "device", "source_type", "source", "volume", "format",
            "cache", "io", "readonly", "boot_order",
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
            "persistent", "is_template", "description", "tags", "gone", "gone_at", "synced_at",
            "lock", "disks", "nics", "created", "updated",
        ]  # fmt: skip
        read_only_fields = fields


class VirtualMachineUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    tenant = serializers.PrimaryKeyRelatedField(
        queryset=Tenant.objects.all(), required=False, help_text="Platform admins only"
    )
