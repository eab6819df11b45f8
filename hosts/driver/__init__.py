"""The hypervisor driver: the only package of Paddock that imports ``libvirt``.

Everything else speaks to a host through it:

- ``connection``: URI validation, SSH host-key pinning, the cached connection of each host;
  its calls have deadlines (``deadline``) and raise ``errors.DriverError``.
- ``errors``: ``DriverError``, ``HostCallTimeout``, ``HostConnectError``, the error codes callers
  test for, and the message helpers.
- ``storage``: volumes and pools on a host (re-exported by ``hosts.storage``).
- ``networks``: reading a host's networks.

and, as they land, a ``Guest`` wrapper, the one event loop, console backends and bulk stats.
"""
