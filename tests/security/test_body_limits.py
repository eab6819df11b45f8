"""Big bodies are refused before Django reads them: no anonymous request fills the disk."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from paddock.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def _request(path: str, headers, chunks, more_body_after=False):
    async def scenario():
        comm = ApplicationCommunicator(
            application,
            {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "headers": [(b"host", b"127.0.0.1"), *headers],
                "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
            },
        )  # fmt: skip
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1 and not more_body_after
            await comm.send_input({"type": "http.request", "body": chunk, "more_body": not last})
        start = await comm.receive_output(5)
        await comm.receive_output(5)
        return start["status"]

    return async_to_sync(scenario)()


def test_huge_declared_body_is_refused_at_once_without_reading_it():
    # Content-Length 10**15, 10 bytes sent, more promised: answered at once, no hang.
    status = _request(
        "/api/health/", [(b"content-length", str(10**15).encode())], [b"x" * 10], True
    )
    assert status == 413


def test_chunked_body_over_the_limit_is_refused(settings):
    settings.PADDOCK = {**settings.PADDOCK, "MAX_BODY_BYTES": 1000}
    status = _request("/api/auth/token/", [], [b"x" * 600, b"x" * 600], True)
    assert status == 413


def test_small_body_reaches_the_view():
    body = b'{"username": "nobody", "password": "x"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    assert _request("/api/auth/token/", headers, [body]) in (400, 403)


def test_upload_schema_documents_the_query_parameters_the_code_reads():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/storage-pools/{id}/upload/"]["post"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"volume_name", "volume_format"} <= names
    assert not {"name", "format"} & names
