"""What ``hosts`` calls in the rooms above it, registered by them: ``hosts`` imports none.

A host's watcher, sync and reconcile know hosts, pools and networks; what a domain means to
the inventory is the business of the app that keeps VM rows (``vms``), which registers in its
``AppConfig.ready()``:

* a **domain handler** ``handler(host, conn, uuid, event)``: the watcher calls it for every
  domain event (``event`` is a name such as ``"started"`` or ``"device-added"``), on the
  watcher's worker thread, with the watcher's connection;
* a **sync step** ``step(host, conn) -> dict``: the host sync calls every step after pools
  and networks; their counts are merged into the sync's summary (the "sync domains" step
  returns ``domains``, ``created``, ``updated``, ``unchanged``, ``gone``...);
* a **reconcile observer** ``observer(host) -> finish``: called before a reconcile's sync,
  ``finish()`` after it publishes what the round changed and returns how many objects.

Registering the same callable twice registers it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DomainHandler = Callable[[Any, Any, str, str], None]
SyncStep = Callable[[Any, Any], dict]
ReconcileObserver = Callable[[Any], Callable[[], int]]

_domain_handlers: list[DomainHandler] = []
_sync_steps: list[SyncStep] = []
_reconcile_observers: list[ReconcileObserver] = []


def _add(registry: list, item: Callable) -> Callable:
    if item not in registry:
        registry.append(item)
    return item


def register_domain_handler(handler: DomainHandler) -> DomainHandler:
    return _add(_domain_handlers, handler)


def register_sync_step(step: SyncStep) -> SyncStep:
    return _add(_sync_steps, step)


def register_reconcile_observer(observer: ReconcileObserver) -> ReconcileObserver:
    return _add(_reconcile_observers, observer)


def handle_domain_event(host, conn, uuid: str, event: str) -> None:
    for handler in list(_domain_handlers):
        handler(host, conn, uuid, event)


def run_sync_steps(host, conn) -> dict:
    summary: dict = {}
    for step in list(_sync_steps):
        summary.update(step(host, conn))
    return summary


def observe_reconcile(host) -> Callable[[], int]:
    """Start every observer on ``host``; the returned call finishes them all."""
    finishers = [observer(host) for observer in list(_reconcile_observers)]
    return lambda: sum(finish() for finish in finishers)
