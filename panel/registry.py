"""What the core must know of the apps above it, registered by those apps.

``panel`` imports no app. Where the core needs an app's models, messages or pages, the app adds
them here from its ``AppConfig.ready()``, and the core reads the registry when it runs:

``lockable_models``
    models with a ``lock`` foreign key to the Task holding them (``panel.locks``);
``task_error_formatters``
    ``fn(exc) -> str | None``: the message a failed task stores, for the exceptions an app knows;
    ``None`` for the others (``panel.taskrunner``);
``conflict_errors``
    exception classes the API answers with 409 and ``{"detail": str(exc)}``
    (``panel.api.exceptions``);
``worker_queues``
    ``fn() -> iterable of queue names`` every worker consumes besides the default one
    (``panel.tasks``, ``paddock``'s ``run_worker``);
``subscriptions``
    ``fn(user, ids) -> iterable of ids``: which objects of a kind of the events socket
    (``"vms"``, ``"hosts"``) the user may follow (``panel.consumers``);
``tree_sections``
    the URL name of a lazily loaded list the resource tree's Datacenter node opens to for a
    platform admin (``"hosts"``: ``ui:tree_hosts``); a tenant user's opens to the tenants
    (``panel.templatetags.paddock.resource_tree``);
``state_labels``
    ``{value: label}`` of an app's states, by kind (``"vm"``), for the state badges;
``task_titles``
    ``fn(task) -> str`` by task kind: what the task does, verb and object ("Stop web-01",
    "Snapshot web-01: before-upgrade"), for the task bar, task pages and the API
    (``Task.title``); a kind without one reads as its words and target;
``tenant_reports``
    ``fn(tenant) -> dict`` by report name: ``"usage"`` (what a tenant uses, for
    ``GET /api/tenants/{id}/usage/``) and ``"placement"`` (the hosts, pools and networks it may
    use, for ``GET /api/tenants/{id}/placement/``).

Registering the same key again replaces the entry, so a ``ready()`` that runs twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by key, in the order they were first registered."""

    def __init__(self, name: str):
        self.name = name
        self._entries: dict[str, T] = {}

    def register(self, key: str, value: T | None = None):
        """Add ``value`` under ``key``; without ``value``, a decorator that adds what it wraps."""
        if value is None:

            def decorator(fn: T) -> T:
                self._entries[key] = fn
                return fn

            return decorator
        self._entries[key] = value
        return value

    def unregister(self, key: str) -> None:
        self._entries.pop(key, None)

    def get(self, key: str, default: T | None = None) -> T | None:
        return self._entries.get(key, default)

    def __getitem__(self, key: str) -> T:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"nothing registered as {key!r} in {self.name}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __repr__(self) -> str:
        return f"<Registry {self.name}: {', '.join(self._entries) or 'empty'}>"


lockable_models: Registry[type] = Registry("lockable models")
task_error_formatters: Registry[Callable[[BaseException], str | None]] = Registry(
    "task error formatters"
)
conflict_errors: Registry[type[Exception]] = Registry("conflict errors")
worker_queues: Registry[Callable[[], list[str]]] = Registry("worker queues")
subscriptions: Registry[Callable] = Registry("event subscriptions")
tree_sections: Registry[str] = Registry("resource tree sections")
state_labels: Registry[dict[str, str]] = Registry("state labels")
tenant_reports: Registry[Callable] = Registry("tenant reports")
task_titles: Registry[Callable] = Registry("task titles")


def register_lockable(*models: type) -> None:
    """Models whose ``lock`` a task takes; released together when the task ends."""
    for model in models:
        lockable_models.register(model._meta.label, model)


def register_task_titles(titles: dict[str, Callable]) -> None:
    """Titles of an app's task kinds: ``{kind: fn(task) -> str}``."""
    for kind, fn in titles.items():
        task_titles.register(kind, fn)


def register_conflict(*exceptions: type[Exception]) -> None:
    """Service exceptions that mean "conflicts with the current state": 409 in the API."""
    for exc in exceptions:
        conflict_errors.register(f"{exc.__module__}.{exc.__qualname__}", exc)
