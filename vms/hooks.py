"""What apps above ``vms`` (tuning) hook into the VM lifecycle, without ``vms`` importing them.

``vms`` calls these registries at fixed points; ``tuning`` fills them in ``TuningConfig.ready()``:

* **create extensions** (:func:`register_create_extension`): an object with
  ``clean(user, tenant, request, errors)`` (validate the extra create fields it owns, e.g.
  ``tuning_policy``; ``errors`` is ``panel.validators.Errors``),
  ``place(user, tenant, request, hosts, errors) -> list[Host]`` (the candidate hosts it
  accepts, best first; placement takes the first), ``check_host(user, tenant, request, host, errors)``,
  ``build(request, host) -> dict`` (extra ``DomainBuild`` fields, e.g. ``{"tuning": {...}}``)
  ``reserve(vm, task, request)`` (runs inside the create's transaction: ledger rows) and
  ``wizard_options(user, tenant) -> dict`` (choices the create wizard shows for its fields);
* **released** (:func:`register_released`): ``fn(vm, reason)`` when a VM's host resources are
  free again (deleted, gone from its host, a create that failed and was rolled back);
* **tuned** (:func:`register_tuned`): ``fn(vm, task, ok, result)`` when a ``vm.tune`` task
  ended (``ok`` False: it failed and was rolled back; ``result`` the verify step's output or the
  error text);
* **observed** (:func:`register_observed`): ``fn(pairs, event)`` after domains were read for
  an event, a sync or a reconcile: ``pairs`` is a list of ``(vm, xml)`` (``xml`` the live
  definition), one call per batch so a listener can read its rows in one query: the drift
  check's trigger.

A hook that raises is logged and does not stop the VM's own work, except ``clean``/``check_host``
(which add to the errors) and ``reserve`` (which refuses the create).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_create: list[Any] = []
_released: list[Callable] = []
_observed: list[Callable] = []
_tuned: list[Callable] = []


def register_create_extension(ext: Any) -> Any:
    if ext not in _create:
        _create.append(ext)
    return ext


def create_extensions() -> list[Any]:
    return list(_create)


def register_released(fn: Callable) -> Callable:
    if fn not in _released:
        _released.append(fn)
    return fn


def register_observed(fn: Callable) -> Callable:
    if fn not in _observed:
        _observed.append(fn)
    return fn


def register_tuned(fn: Callable) -> Callable:
    if fn not in _tuned:
        _tuned.append(fn)
    return fn


def tuned(vm, task, ok: bool, result) -> None:
    for fn in _tuned:
        try:
            fn(vm, task, ok, result)
        except Exception:
            log.exception("tuned hook %s failed for vm %s", fn, getattr(vm, "pk", vm))


def released(vm, reason: str) -> None:
    for fn in _released:
        try:
            fn(vm, reason)
        except Exception:
            log.exception("release hook %s failed for vm %s", fn, getattr(vm, "pk", vm))


def observed(pairs: list, event: str) -> None:
    if not pairs:
        return
    for fn in _observed:
        try:
            fn(pairs, event)
        except Exception:
            log.exception("observe hook %s failed (%s, %d domains)", fn, event, len(pairs))
