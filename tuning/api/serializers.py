"""Shapes of the tuning API (``docs/api.md`` and the OpenAPI schema say the same)."""

from __future__ import annotations

from rest_framework import serializers

from ..models import TuningPolicy


class TuningPolicySerializer(serializers.ModelSerializer):
    tenant = serializers.IntegerField(source="tenant_id", allow_null=True, required=False)
    knobs = serializers.JSONField(required=False)

    class Meta:
        model = TuningPolicy
        fields = ["id", "name", "tenant", "description", "builtin", "version", "knobs", "created",
                  "updated"]  # fmt: skip
        read_only_fields = ["id", "builtin", "version", "created", "updated"]


class PolicyRefSerializer(serializers.Serializer):
    policy = serializers.JSONField(help_text="A policy id or name.")


class CopySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    tenant = serializers.IntegerField(allow_null=True, required=False)


class SpecFitSerializer(serializers.Serializer):
    tenant = serializers.IntegerField()
    policy = serializers.JSONField()
    vcpus = serializers.IntegerField(min_value=1, max_value=512)
    memory_mib = serializers.IntegerField(min_value=64, max_value=2**24)
    disks = serializers.IntegerField(min_value=0, max_value=16, default=1)
    nics = serializers.IntegerField(min_value=0, max_value=16, default=1)


class HousekeepingSerializer(serializers.Serializer):
    cpus = serializers.ListField(child=serializers.IntegerField(min_value=0), max_length=4096)
