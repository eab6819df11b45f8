"""The role-by-endpoint matrix (tests/api/test_roles.py) sees every API route, and holds rows
for the endpoints it once missed: VM create, power, disks, NICs, snapshots and the console."""

from __future__ import annotations

import re

from django.urls import URLPattern, URLResolver, get_resolver

from tests.api.test_roles import ACTORS, MATRIX, routed_endpoints

# Once missing from the matrix; each must keep a row.
REQUIRED = {
    ("post", "/api/vms/"),
    *{("post", f"/api/vms/{{pk}}/{verb}/")
      for verb in ("start", "shutdown", "stop", "reboot", "reset", "pause", "resume")},
    ("post", "/api/vms/{pk}/disks/"),
    ("delete", "/api/vms/{pk}/disks/{disk_id}/"),
    ("post", "/api/vms/{pk}/disks/{disk_id}/resize/"),
    ("post", "/api/vms/{pk}/nics/"),
    ("delete", "/api/vms/{pk}/nics/{nic_id}/"),
    ("get", "/api/vms/{pk}/snapshots/"),
    ("post", "/api/vms/{pk}/snapshots/"),
    ("post", "/api/vms/{pk}/snapshots/{name}/revert/"),
    ("delete", "/api/vms/{pk}/snapshots/{name}/"),
    ("get", "/api/vms/{pk}/console/"),
    ("post", "/api/vms/{pk}/console/"),
}  # fmt: skip


def _url_conf_routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _url_conf_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield "/" + prefix + str(pattern.pattern)


def _as_schema_route(route: str) -> str:
    """``/api/vms/<id:pk>/`` as the schema spells it: ``/api/vms/{pk}/``."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_api_route_in_the_url_conf_reaches_the_matrix_meta_test():
    """A view the schema does not list (a plain Django view under /api/, say) would escape
    test_every_routed_endpoint_has_a_matrix_row; none may."""
    conf = {
        _as_schema_route(r)
        for r in _url_conf_routes(get_resolver().url_patterns)
        if r.startswith("/api/") and r != "/api/"
    }
    seen = {route for _method, route in routed_endpoints()}
    assert conf - seen == set(), "API routes the matrix's endpoint list does not see"


def test_endpoints_once_missing_have_rows():
    rows = {(method, route) for method, route, _path, _body, _expected in MATRIX}
    assert REQUIRED - rows == set()


def test_every_row_names_every_actor():
    for method, route, _path, _body, expected in MATRIX:
        assert set(expected) == set(ACTORS), (method, route)
