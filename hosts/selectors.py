"""Reads of hosts and what they hold; platform admins only."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from .models import Host, Network, StoragePool, Volume


def hosts() -> QuerySet[Host]:
    return Host.objects.annotate(vm_count=Count("vms", filter=Q(vms__gone=False)))


def pools() -> QuerySet[StoragePool]:
    return StoragePool.objects.select_related("host")


def volumes() -> QuerySet[Volume]:
    return Volume.objects.select_related("pool__host")


def networks() -> QuerySet[Network]:
    return Network.objects.select_related("host")
