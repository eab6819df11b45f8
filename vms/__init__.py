"""VMs: virtual machines with their disks and NICs, domain XML, lifecycle services and tasks."""
