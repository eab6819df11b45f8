"""Paddock's core, which every app may import: tenancy, the task engine and locks, live events,
validators, XML helpers, units, the shared UI helpers and the security middleware.

The core imports no app: what it must know of one, the app registers (``panel.registry``).
"""
