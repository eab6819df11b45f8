"""The upload endpoint through the real ASGI stack: no byte read before a platform admin is
authenticated and the size fits, then the body goes to the host as it arrives."""

from __future__ import annotations

import hashlib
import os

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from hosts.models import Volume
from paddock.asgi import application
from panel.models import ApiToken

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _post(path: str, headers: list, chunks: list[bytes], *, more_after: bool = False):
    """Send ``chunks`` as the body; with ``more_after`` the client promises more and never
    sends it, so only an answer given without reading the whole body arrives in time."""

    async def scenario():
        path_only, _, query = path.partition("?")
        comm = ApplicationCommunicator(
            application,
            {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path_only,
                "raw_path": path_only.encode(), "query_string": query.encode(),
                "headers": [(b"host", b"127.0.0.1"), *headers],
                "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
            },
        )  # fmt: skip
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1 and not more_after
            await comm.send_input({"type": "http.request", "body": chunk, "more_body": not last})
        start = await comm.receive_output(20)
        body = await comm.receive_output(20)
        return start["status"], body.get("body", b"")

    return async_to_sync(scenario)()


def _token(user) -> list:
    _token_row, raw = ApiToken.issue(user=user, name="upload")
    return [(b"authorization", f"Token {raw}".encode())]


def _length(n: int) -> list:
    return [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())]


def test_anonymous_upload_is_refused_before_the_body_is_read(lab):
    path = f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=x.iso"
    status, _ = _post(path, _length(10**12), [b"x" * 10], more_after=True)
    assert status == 401
    ui = f"/pools/{lab['pool'].pk}/volumes/upload/"
    status, _ = _post(ui, _length(10**12), [b"x" * 10], more_after=True)
    assert status == 401
    assert not Volume.objects.filter(name="x.iso").exists()


def test_tenant_user_upload_is_refused_before_the_body_is_read(lab, make_member):
    operator = make_member(lab["tenant"], "admin")
    path = f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=x.iso"
    status, _ = _post(path, _token(operator) + _length(10**12), [b"x" * 10], more_after=True)
    assert status == 403


def test_admin_upload_larger_than_the_pool_is_refused_before_reading(lab):
    path = f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=huge.iso"
    headers = _token(lab["admin"]) + _length(1024**5)
    status, body = _post(path, headers, [b"x" * 10], more_after=True)
    assert status == 400 and b"does not fit" in body
    assert not Volume.objects.filter(name="huge.iso").exists()


def test_admin_upload_streams_to_the_host(lab):
    payload = os.urandom(3 * 1024 * 1024 + 77)
    chunks = [payload[i : i + 256 * 1024] for i in range(0, len(payload), 256 * 1024)]
    path = f"/api/storage-pools/{lab['pool'].pk}/upload/?volume_name=stream.iso&volume_format=iso"
    status, body = _post(path, _token(lab["admin"]) + _length(len(payload)), chunks)
    assert status == 201, body
    volume = Volume.objects.get(pool=lab["pool"], name="stream.iso")
    with open(volume.path, "rb") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(payload).digest()
