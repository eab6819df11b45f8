"""Enumerations of the hosts room."""

from django.db import models


class HostStatus(models.TextChoices):
    NEW = "new", "New"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    ERROR = "error", "Error"


class PoolState(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    BUILDING = "building", "Building"
    DEGRADED = "degraded", "Degraded"
    INACCESSIBLE = "inaccessible", "Inaccessible"


class PoolType(models.TextChoices):
    DIR = "dir", "Directory"
    LOGICAL = "logical", "LVM"
    FS = "fs", "File system"
    NETFS = "netfs", "Network file system"
    DISK = "disk", "Disk"
    ISCSI = "iscsi", "iSCSI"
    RBD = "rbd", "Ceph RBD"
    ZFS = "zfs", "ZFS"
    OTHER = "other", "Other"


class ForwardMode(models.TextChoices):
    ISOLATED = "isolated", "Isolated"
    NAT = "nat", "NAT"
    ROUTE = "route", "Routed"
    OPEN = "open", "Open"
    BRIDGE = "bridge", "Bridge"
    PASSTHROUGH = "passthrough", "Passthrough"
    PRIVATE = "private", "Private"
    VEPA = "vepa", "VEPA"
    HOSTDEV = "hostdev", "SR-IOV (hostdev)"


class VolumeFormat(models.TextChoices):
    """Formats of the volumes Paddock creates (a VM's disks use the same words)."""

    QCOW2 = "qcow2", "QEMU image (qcow2)"
    RAW = "raw", "Raw disk image (raw)"
