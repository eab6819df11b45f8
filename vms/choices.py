"""Enumerations of the VM room."""

from django.db import models

from hosts.choices import VolumeFormat


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


class Lifecycle(models.TextChoices):
    """Paddock's own stage of a VM, beside libvirt's observed state."""

    CREATING = "creating", "Creating"
    READY = "ready", "Ready"
    DELETING = "deleting", "Deleting"


class PowerAction(models.TextChoices):
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    STOP = "stop", "Stop"
    REBOOT = "reboot", "Reboot"
    RESET = "reset", "Reset"
    PAUSE = "pause", "Pause"
    RESUME = "resume", "Resume"


class DiskBus(models.TextChoices):
    VIRTIO = "virtio", "VirtIO block"
    SCSI = "scsi", "VirtIO SCSI"
    SATA = "sata", "SATA"


class MachineType(models.TextChoices):
    Q35 = "q35", "q35 (PCIe)"
    PC = "pc", "i440fx (PCI)"


# Devices one VM may have, in the wizard, the API and every attach: bounded before any row is
# looked at. 16 keeps well inside what a q35 machine's PCIe root ports and libvirt accept.
MAX_DISKS = 16
MAX_NICS = 16


class NicModel(models.TextChoices):
    VIRTIO = "virtio", "VirtIO (paravirtualized)"
    E1000E = "e1000e", "Intel E1000E"
    RTL8139 = "rtl8139", "Realtek RTL8139"


# A disk's format is its volume's: one vocabulary with the storage room.
DiskFormat = VolumeFormat


class CloneMode(models.TextChoices):
    """How a clone's disk is made from its source volume."""

    LINKED = "linked", "Linked clone"
    FULL = "full", "Full copy"


class BootDevice(models.TextChoices):
    DISK = "disk", "Disk"
    CDROM = "cdrom", "CD-ROM"
    NETWORK = "network", "Network"
