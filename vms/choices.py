"""Enumerations of the VM room."""

from django.db import models


class VMState(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    PMSUSPENDED = "pmsuspended", "Suspended (PM)"
    UNKNOWN = "unknown", "Unknown"


class Firmware(models.TextChoices):
    BIOS = "bios", "BIOS"
    UEFI = "uefi", "UEFI"


class DiskDevice(models.TextChoices):
    DISK = "disk", "Disk"
    CDROM = "cdrom", "CD-ROM"
    FLOPPY = "floppy", "Floppy"
    LUN = "lun", "LUN"
