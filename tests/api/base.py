"""A generic API test base: one small declarative class per model endpoint.

A subclass names its collection URL, the keys of one object, the filters, which fields a PATCH
changes and which it must leave alone, and the status each actor gets; ``ModelEndpointTests``
turns that into tests of list, get, filters, editable and read-only fields and permissions.
The objects come from the ``tenancy`` fixture (tests/api/conftest.py): tenants acme and globex
on the simulated host, a user per role in acme, globex's tenant admin, and in each tenant the
objects a test names with ``acme_object``/``globex_object``.

Actors: ``platform`` (platform admin), acme's ``admin``, ``operator``, ``member``, ``viewer``,
and ``outsider`` (globex's tenant admin). Another tenant's object is a 404 (it does not exist
for them); a collection only platform admins may use is a 403 to everyone else.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from django.core.cache import cache
from django.db import transaction

ACTORS = ["platform", "admin", "operator", "member", "viewer", "outsider"]
TENANT_ROLES = ["admin", "operator", "member", "viewer"]
PAGE_KEYS = {"count", "next", "previous", "results"}


def per_actor(platform, admin, operator, member, viewer, outsider) -> dict[str, int]:
    return dict(zip(ACTORS, [platform, admin, operator, member, viewer, outsider], strict=True))


PLATFORM_ONLY = per_actor(200, 403, 403, 403, 403, 403)
EVERY_ACME_ROLE = per_actor(200, 200, 200, 200, 200, 404)


class ModelEndpointTests:
    """Subclass as ``TestSomething(ModelEndpointTests)`` and fill in the class attributes."""

    url: ClassVar[str]  # the collection, e.g. "/api/vms/"
    fields: ClassVar[set[str]]  # the keys of one object as the platform admin reads it
    # Query parameter -> (value, what every result holds); a value or callable(tenancy).
    filters: ClassVar[dict[str, tuple[Any, Any]]] = {}
    # Field -> a new value a PATCH by the platform admin stores (and the GET shows).
    editable: ClassVar[dict[str, Any]] = {}
    # Field -> a value a PATCH must not store (the field is ignored, or the request is a 400).
    read_only: ClassVar[dict[str, Any]] = {}
    # Who may GET acme's object; who may PATCH it (an editable field), if PATCH is routed.
    get_status: ClassVar[dict[str, int]] = EVERY_ACME_ROLE
    patch_status: ClassVar[dict[str, int] | None] = None
    # Who may list the collection (200 lists only what the actor may see).
    list_status: ClassVar[dict[str, int] | None] = None

    def __init_subclass__(cls, **kwargs):
        """Tests a subclass has nothing for are not collected (rather than skipped)."""
        super().__init_subclass__(**kwargs)
        absent = {
            "test_another_tenants_object_is_404_to_acme": cls.globex_object
            is ModelEndpointTests.globex_object,
            "test_filters": not cls.filters,
            "test_editable_fields_are_stored": not cls.editable,
            "test_read_only_fields_are_never_changed": not cls.read_only,
            "test_patch_answers_each_actor": cls.patch_status is None,
        }
        for name, missing in absent.items():
            if missing:
                setattr(cls, name, None)

    # --- what the subclass points at ---------------------------------------------------------

    def acme_object(self, tenancy):
        """The object the GET and PATCH tests use (acme's, or the platform's)."""
        raise NotImplementedError

    def globex_object(self, tenancy):
        """An object of the other tenant: none of acme's users may see it (None: no such)."""
        return None

    # --- helpers -----------------------------------------------------------------------------

    def detail(self, obj) -> str:
        return f"{self.url}{obj.pk}/"

    @staticmethod
    def _value(value, tenancy):
        return value(tenancy) if callable(value) else value

    @staticmethod
    def client(api, tenancy, actor):
        cache.clear()  # throttles count per process
        api.force_authenticate(user=tenancy["users"][actor])
        return api

    def _list_status(self) -> dict[str, int]:
        if self.list_status is not None:
            return self.list_status
        return per_actor(*[200 if s != 403 else 403 for s in self.get_status.values()])

    # --- the tests ---------------------------------------------------------------------------

    def test_get_answers_each_actor(self, api, tenancy):
        url = self.detail(self.acme_object(tenancy))
        got = {a: self.client(api, tenancy, a).get(url).status_code for a in ACTORS}
        assert got == self.get_status

    def test_object_shows_exactly_its_fields(self, api, tenancy):
        body = self.client(api, tenancy, "platform").get(self.detail(self.acme_object(tenancy)))
        assert body.status_code == 200
        assert set(body.json()) == self.fields

    def test_list_pages_and_holds_only_what_the_actor_sees(self, api, tenancy):
        acme = self.acme_object(tenancy)
        globex = self.globex_object(tenancy)
        for actor, expected in self._list_status().items():
            response = self.client(api, tenancy, actor).get(self.url, {"limit": 1000})
            assert response.status_code == expected, actor
            if expected != 200:
                continue
            body = response.json()
            assert set(body) == PAGE_KEYS
            ids = {row["id"] for row in body["results"]}
            assert body["count"] == len(ids)
            assert (acme.pk in ids) == (self.get_status[actor] == 200), actor
            if globex is not None:
                sees_globex = actor in ("platform", "outsider")
                assert (globex.pk in ids) == sees_globex, actor

    def test_another_tenants_object_is_404_to_acme(self, api, tenancy):
        globex = self.globex_object(tenancy)
        for actor in TENANT_ROLES:
            response = self.client(api, tenancy, actor).get(self.detail(globex))
            assert response.status_code == 404, actor
        assert self.client(api, tenancy, "platform").get(self.detail(globex)).status_code == 200

    def test_filters(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        everything = client.get(self.url, {"limit": 1000}).json()["count"]
        for param, (value, holds) in self.filters.items():
            value = self._value(value, tenancy)
            response = client.get(self.url, {param: value, "limit": 1000})
            assert response.status_code == 200, (param, response.content)
            rows = response.json()["results"]
            assert rows, f"?{param}={value} matched nothing: the filter is not tested"
            assert all(holds(row, tenancy) for row in rows), (param, value)
            assert len(rows) <= everything

    def test_editable_fields_are_stored(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        url = self.detail(self.acme_object(tenancy))
        for name, value in self.editable.items():
            value = self._value(value, tenancy)
            response = client.patch(url, {name: value}, format="json")
            assert response.status_code == 200, (name, response.content)
            assert client.get(url).json()[name] == value, name

    def test_read_only_fields_are_never_changed(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        url = self.detail(self.acme_object(tenancy))
        before = client.get(url).json()
        for name, value in self.read_only.items():
            value = self._value(value, tenancy)
            assert before[name] != value, f"{name}: try a value it does not have"
            with transaction.atomic():
                response = client.patch(url, {name: value}, format="json")
                transaction.set_rollback(True)
            assert response.status_code in (200, 202, 400), (name, response.status_code)
            assert client.get(url).json()[name] == before[name], name

    def test_patch_answers_each_actor(self, api, tenancy):
        url = self.detail(self.acme_object(tenancy))
        name, value = next(iter(self.editable.items()))
        body = {name: copy.deepcopy(self._value(value, tenancy))}
        got = {}
        for actor in ACTORS:
            with transaction.atomic():
                got[actor] = self.client(api, tenancy, actor).patch(url, body, format="json")
                got[actor] = got[actor].status_code
                transaction.set_rollback(True)
        assert got == self.patch_status
