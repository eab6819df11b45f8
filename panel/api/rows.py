"""Big lists read as rows: a ModelSerializer's output built from ``values()`` rows.

A page of 1,000 VMs through DRF's field machinery costs most of a millisecond per VM (a model
instance per row and per device, then a ``get_attribute``/``to_representation`` pair per field).
:class:`RowShape` reads the same shape from plain rows: it takes the serializer's
``Meta.fields`` (so the schema and the answer stay one definition), turns each model field into
its ``values()`` path and a converter that gives what the serializer would (a datetime as DRF
writes it, a UUID as text, a foreign key as its id), and leaves declared fields (nested objects)
to the caller. ``tests/api/test_rows.py`` holds the two outputs equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from rest_framework import serializers
from rest_framework.settings import api_settings

_DATE = serializers.DateField()
_DATETIME = object()  # converted by RowShape with the zone looked up once per page


def _converter(field: models.Field) -> Callable[[Any], Any] | object | None:
    if isinstance(field, models.DateTimeField):
        return _DATETIME
    if isinstance(field, models.DateField):
        return _DATE.to_representation
    if isinstance(field, models.UUIDField):
        return str
    if isinstance(field, models.DecimalField):
        return serializers.DecimalField(
            max_digits=field.max_digits, decimal_places=field.decimal_places
        ).to_representation
    return None


class RowShape:
    """The read shape of ``serializer_class`` over ``values()`` rows.

    ``nested`` maps each declared field of the serializer to a function of the row (and the
    extra data the caller gathered, e.g. prefetched children) giving that field's value;
    ``nested_paths`` lists the ``values()`` paths those functions read.
    """

    def __init__(
        self,
        serializer_class: type[serializers.ModelSerializer],
        nested: dict[str, Callable[[dict], Any]] | None = None,
        nested_paths: Iterable[str] = (),
    ) -> None:
        meta = serializer_class.Meta
        model_meta = meta.model._meta
        self.nested = dict(nested or {})
        self.plan: list[tuple[str, str | None, Callable[[Any], Any] | None]] = []
        paths: list[str] = []
        for name in meta.fields:
            if name in self.nested:
                self.plan.append((name, None, None))
                continue
            field = model_meta.get_field(name)
            path = field.attname
            paths.append(path)
            self.plan.append((name, path, _converter(field)))
        missing = set(serializer_class._declared_fields) - set(self.nested)
        if missing:
            raise ValueError(f"declared fields without a row reader: {sorted(missing)}")
        self.paths = list(dict.fromkeys([*paths, *nested_paths]))

    def one(self, row: dict, zone=None) -> dict:
        out = {}
        for name, path, convert in self.plan:
            if path is None:
                out[name] = self.nested[name](row)
                continue
            value = row[path]
            if value is None or convert is None:
                out[name] = value
            elif convert is _DATETIME:
                out[name] = _iso_datetime(value, zone or _zone())
            else:
                out[name] = convert(value)
        return out

    def many(self, rows: Iterable[dict]) -> list[dict]:
        zone = _zone()
        return [self.one(row, zone) for row in rows]


def _zone():
    return timezone.get_current_timezone() if settings.USE_TZ else None


def _iso_datetime(value, zone) -> str:
    """What DRF's DateTimeField writes (ISO 8601, in the current zone, ``Z`` for UTC), without
    its per-value zone lookups (most of a page's conversion time)."""
    if api_settings.DATETIME_FORMAT.lower() != "iso-8601":
        return serializers.DateTimeField().to_representation(value)
    if zone is not None and timezone.is_aware(value):
        value = value.astimezone(zone)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def group_by(rows: Iterable[dict], key: str, shape: RowShape) -> dict[Any, list[dict]]:
    """Child rows (e.g. a page's disks) in the child serializer's shape, by parent id."""
    grouped: dict[Any, list[dict]] = {}
    zone = _zone()
    for row in rows:
        grouped.setdefault(row[key], []).append(shape.one(row, zone))
    return grouped
