"""The standard paginated shape: count, next, previous, results — by offset or by cursor.

- ``?limit=&offset=`` as DRF's LimitOffsetPagination (``limit`` ≤ 1000).
- ``?cursor=`` (keyset): pages that follow the list's ordering from where the last one
  ended, so page 1,000 costs what page 1 costs (``OFFSET`` makes the database walk every row
  before it). Start with ``?cursor=`` (empty) and follow ``next``; ``previous`` is null. The
  ordering is the list's own (``?ordering=`` where a list offers it), with the primary key
  added when it is not there, so no row is skipped or repeated.
- ``count``: exact while it is small; above :data:`CACHED_COUNT_ABOVE` rows the count of the
  same query is kept for :data:`COUNT_CACHE_SECONDS` (counting 50,000 rows on every page is
  most of a page's cost); ``?count=false`` leaves it out (``null``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections import OrderedDict

from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

CACHED_COUNT_ABOVE = 10_000
COUNT_CACHE_SECONDS = 30
MAX_CURSOR_CHARS = 2000


def _ordering(queryset) -> list[str]:
    fields = list(queryset.query.order_by or queryset.model._meta.ordering or [])
    fields = [f for f in fields if isinstance(f, str)]
    if not any(f.lstrip("-") in ("pk", "id") for f in fields):
        fields.append("pk")
    return fields


def _value(obj, path: str):
    if isinstance(obj, dict):  # a values() row (panel.api.rows)
        path = path.lstrip("-")
        return obj["id" if path == "pk" else path]
    for part in path.lstrip("-").split("__"):
        obj = getattr(obj, "pk" if part == "pk" else part)
        if obj is None:
            return None
    return obj


def _after(ordering: list[str], values: list) -> Q:
    """Rows after ``values`` in ``ordering``: (a > x) or (a = x and b > y) ..."""
    condition = Q()
    for i, field in enumerate(ordering):
        name = field.lstrip("-")
        op = "lt" if field.startswith("-") else "gt"
        step = Q(**{f"{name}__{op}": values[i]})
        for prev, value in zip(ordering[:i], values[:i], strict=True):
            step &= Q(**{prev.lstrip("-"): value})
        condition |= step
    return condition


class _CursorEncoder(DjangoJSONEncoder):
    # Datetimes to the microsecond: DjangoJSONEncoder keeps milliseconds, and a cursor after a
    # rounded-down time would hand out the same row again (?ordering=created, started_at).
    def default(self, o):
        if isinstance(o, datetime.datetime):
            return o.isoformat()
        return super().default(o)


def encode_cursor(values: list) -> str:
    raw = json.dumps(values, cls=_CursorEncoder, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, fields: int) -> list | None:
    if not text:
        return None
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(values, list) or len(values) != fields:
            raise ValueError
        if any(v is None or isinstance(v, dict | list) for v in values):
            raise ValueError
    except (ValueError, TypeError):
        raise ValidationError({"cursor": "Not a cursor this list gave out."}) from None
    return values


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000
    cursor_query_param = "cursor"
    count_query_param = "count"

    def _count(self, queryset) -> int:
        try:
            sql, params = queryset.query.sql_with_params()
        except Exception:  # an empty result set, say: nothing to cache
            return queryset.count()
        key = "paddock:count:" + hashlib.sha256(f"{sql}|{params!r}".encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached
        count = queryset.count()
        if count > CACHED_COUNT_ABOVE:
            cache.set(key, count, COUNT_CACHE_SECONDS)
        return count

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.cursor_mode = self.cursor_query_param in request.query_params
        flag = request.query_params.get(self.count_query_param, "true").strip().lower()
        self.count = self._count(queryset) if flag not in ("false", "0", "no") else None
        if self.cursor_mode:
            ordering = _ordering(queryset)
            values = decode_cursor(request.query_params.get(self.cursor_query_param), len(ordering))
            page = queryset.order_by(*ordering)
            if values is not None:
                try:
                    page = page.filter(_after(ordering, values))
                except (ValueError, TypeError, DjangoValidationError):
                    raise ValidationError({"cursor": "Not a cursor this list gave out."}) from None
            rows = list(page[: self.limit + 1])
            self.next_values = (
                [_value(rows[self.limit - 1], f) for f in ordering]
                if len(rows) > self.limit
                else None
            )
            self.offset = 0
            return rows[: self.limit]
        self.offset = self.get_offset(request)
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_more = len(rows) > self.limit
        if self.count is not None and self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        return rows[: self.limit]

    def get_next_link(self):
        url = self.request.build_absolute_uri()
        if self.cursor_mode:
            if self.next_values is None:
                return None
            url = replace_query_param(url, self.limit_query_param, self.limit)
            return replace_query_param(
                url, self.cursor_query_param, encode_cursor(self.next_values)
            )
        if not self.has_more:
            return None
        url = replace_query_param(url, self.limit_query_param, self.limit)
        return replace_query_param(url, self.offset_query_param, self.offset + self.limit)

    def get_previous_link(self):
        if self.cursor_mode or self.offset <= 0:
            return None
        url = replace_query_param(
            self.request.build_absolute_uri(), self.limit_query_param, self.limit
        )
        if self.offset - self.limit <= 0:
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, self.offset - self.limit)

    def get_paginated_response(self, data):
        return Response(
            OrderedDict(
                [
                    ("count", self.count),
                    ("next", self.get_next_link()),
                    ("previous", self.get_previous_link()),
                    ("results", data),
                ]
            )
        )

    def get_paginated_response_schema(self, schema):
        shape = super().get_paginated_response_schema(schema)
        shape["properties"]["count"]["nullable"] = True
        shape["properties"]["count"]["description"] = (
            f"Rows in the list; above {CACHED_COUNT_ABOVE} it may be up to "
            f"{COUNT_CACHE_SECONDS} s old; null with ?count=false."
        )
        return shape

    def get_schema_operation_parameters(self, view):
        return [
            *super().get_schema_operation_parameters(view),
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Keyset pagination: empty for the first page, then follow next.",
                "schema": {"type": "string"},
            },
            {
                "name": self.count_query_param,
                "required": False,
                "in": "query",
                "description": "false: leave the count out (null).",
                "schema": {"type": "boolean"},
            },
        ]

    def get_html_context(self):
        if self.count is None or self.cursor_mode:
            return {"previous_url": self.get_previous_link(), "next_url": self.get_next_link()}
        return super().get_html_context()
