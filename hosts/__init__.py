"""Hosts: the hypervisors, their storage and networks, connections to them and sync from libvirt."""
