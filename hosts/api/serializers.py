"""API shapes of the hosts room."""

from __future__ import annotations

from rest_framework import serializers

from hosts.choices import VolumeFormat
from hosts.models import Host, Network, StoragePool, Volume
from panel.api.serializers import BriefSerializer, IdField

# The largest volume Paddock creates or grows to (the service checks it too).
MAX_VOLUME_GIB = 64 * 1024


class HostSerializer(serializers.ModelSerializer):
    vm_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Host
        fields = [
            "id", "name", "uri", "description", "tags", "status", "last_error", "last_seen",
            "last_synced", "simulated", "ssh_address", "ssh_port", "ssh_user", "ssh_host_key",
            "hostname", "hypervisor", "hypervisor_version", "libvirt_version", "arch",
            "cpu_model", "cpu_vendor", "cpu_mhz", "sockets", "cores", "threads", "cpus",
            "memory_mib", "numa_cells", "virt_types", "kvm_note", "lock", "vm_count", "created", "updated",
        ]  # fmt: skip
        read_only_fields = [
            f for f in fields if f not in ("name", "uri", "description", "tags", "ssh_host_key")
        ]


class HostCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    uri = serializers.CharField(
        max_length=500,
        help_text="test:///path.xml, qemu:///system or qemu+ssh://user@host[:port]/system",
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    ssh_host_key = serializers.CharField(
        required=False, allow_blank=True,
        help_text="Expected SSH host key ('ssh-ed25519 AAAA…'); read and pinned at the first sync when empty.",
    )  # fmt: skip
    offline = serializers.BooleanField(
        required=False, default=False,
        help_text="Add the host even when Paddock cannot connect to it now: it is added offline "
        "with the connection error (its first sync still tries again). Without it, that error "
        "is a 400 on uri.",
    )  # fmt: skip


class HostUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)


class StoragePoolSerializer(serializers.ModelSerializer):
    host = BriefSerializer(read_only=True)
    used_percent = serializers.FloatField(read_only=True)

    class Meta:
        model = StoragePool
        fields = [
            "id", "name", "host", "uuid", "pool_type", "path", "source_name", "state",
            "autostart", "capacity", "allocation", "available", "used_percent", "description",
            "tags", "gone", "gone_at", "synced_at",
        ]  # fmt: skip
        read_only_fields = [f for f in fields if f not in ("description", "tags")]


class VolumeSerializer(serializers.ModelSerializer):
    pool = BriefSerializer(read_only=True)
    host = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = [
            "id", "name", "pool", "host", "key", "path", "vol_type", "format", "capacity",
            "allocation", "backing_path", "backing_depth", "lock", "tenant", "published",
            "description", "tags", "gone", "gone_at", "synced_at",
        ]  # fmt: skip
        read_only_fields = [
            f for f in fields if f not in ("description", "tags", "published", "tenant")
        ]
        extra_kwargs = {
            "tenant": {
                "help_text": "Owner: the tenant whose data this is (empty: the platform's). A "
                "published volume with an owner is offered to that tenant only."
            },
            "published": {"help_text": "Offered read-only as an image (CD-ROM, copy, backing)."},
        }

    def get_host(self, vol: Volume) -> dict:
        return {"id": vol.pool.host_id, "name": vol.pool.host.name}


class NetworkSerializer(serializers.ModelSerializer):
    host = BriefSerializer(read_only=True)

    class Meta:
        model = Network
        fields = [
            "id", "name", "host", "uuid", "forward_mode", "bridge", "ip_address", "ip_prefix",
            "active", "autostart", "persistent", "description", "tags", "gone", "gone_at",
            "synced_at",
        ]  # fmt: skip
        read_only_fields = [f for f in fields if f not in ("description", "tags")]


class VolumeCreateSerializer(serializers.Serializer):
    pool = IdField()
    name = serializers.CharField(max_length=127)
    size_gib = serializers.FloatField(min_value=0.001, max_value=MAX_VOLUME_GIB)
    format = serializers.ChoiceField(choices=VolumeFormat.values, default=VolumeFormat.QCOW2)


class VolumeResizeSerializer(serializers.Serializer):
    size_gib = serializers.FloatField(min_value=0.001, max_value=MAX_VOLUME_GIB)
