"""The hypervisor driver: the only package of Paddock that imports ``libvirt``.

Everything else speaks to a host through it: the connection (``connection``), and, as they
land, a ``Guest`` wrapper, the one event loop, console backends and bulk stats.
"""
