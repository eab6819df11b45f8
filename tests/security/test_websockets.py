"""Websocket attacks: foreign Origins riding on the session cookie, token clients without an
Origin, unknown paths, and frames that are not what the protocol expects."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.test import Client

from paddock.asgi import application
from panel.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:8000")
OWN_ORIGIN = (b"origin", b"http://127.0.0.1:8000")
REFUSED = 1008


class Socket(ApplicationCommunicator):
    def __init__(self, path: str, headers) -> None:
        super().__init__(
            application,
            {
                "type": "websocket",
                "scheme": "ws",
                "path": path,
                "query_string": b"",
                "headers": headers,
                "subprotocols": [],
            },
        )

    async def open(self):
        """("accept", None) or ("close", code)."""
        await self.send_input({"type": "websocket.connect"})
        reply = await self.receive_output(5)
        return ("accept", None) if reply["type"] == "websocket.accept" else ("close", reply["code"])

    async def send_text(self, text: str) -> None:
        await self.send_input({"type": "websocket.receive", "text": text})

    async def receive_json(self):
        reply = await self.receive_output(5)
        assert reply["type"] == "websocket.send", reply
        return json.loads(reply["text"])

    async def close(self) -> None:
        if not self.future.done():
            await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(5)  # re-raises whatever the application raised


def _cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


def _open(path: str, headers):
    async def scenario():
        sock = Socket(path, headers)
        result = await sock.open()
        hello = await sock.receive_json() if result[0] == "accept" else None
        await sock.close()
        return result, hello

    return async_to_sync(scenario)()


# --- the Origin rule (item: one rule for events and console sockets) ---------------------------


def test_session_socket_from_foreign_origin_is_refused(admin_user):
    foreign = (b"origin", b"http://127.0.0.1:9999")
    result, _ = _open("/ws/events/", [HOST, foreign, _cookie(admin_user)])
    assert result == ("close", REFUSED)


@pytest.mark.parametrize(
    "origin",
    [b"https://127.0.0.1:8000", b"http://localhost:8000", b"http://127.0.0.1", b"null", b"x"],
)
def test_session_socket_from_other_scheme_host_or_port_is_refused(admin_user, origin):
    result, _ = _open("/ws/events/", [HOST, (b"origin", origin), _cookie(admin_user)])
    assert result == ("close", REFUSED)


def test_session_socket_without_origin_is_refused(admin_user):
    result, _ = _open("/ws/events/", [HOST, _cookie(admin_user)])
    assert result == ("close", REFUSED)


def test_session_socket_from_own_origin_is_accepted(admin_user):
    result, hello = _open("/ws/events/", [HOST, OWN_ORIGIN, _cookie(admin_user)])
    assert result == ("accept", None)
    assert hello["type"] == "hello" and hello["user"] == admin_user.username


def test_session_socket_with_host_outside_allowed_hosts_is_refused(admin_user):
    rebinding = [(b"host", b"evil.example:8000"), (b"origin", b"http://evil.example:8000")]
    result, _ = _open("/ws/events/", [*rebinding, _cookie(admin_user)])
    assert result == ("close", REFUSED)


def test_session_socket_from_configured_proxy_origin_is_accepted(admin_user, settings):
    settings.PADDOCK_ORIGINS = ["https://panel.example.org"]
    headers = [HOST, (b"origin", b"https://panel.example.org"), _cookie(admin_user)]
    result, hello = _open("/ws/events/", headers)
    assert result == ("accept", None) and hello["type"] == "hello"


def test_token_socket_without_origin_is_accepted(admin_user):
    _token, raw = ApiToken.issue(user=admin_user, name="bot")
    result, hello = _open("/ws/events/", [HOST, (b"authorization", f"Token {raw}".encode())])
    assert result == ("accept", None)
    assert hello["type"] == "hello" and hello["user"] == admin_user.username


def test_wrong_token_socket_is_closed_unauthenticated():
    async def scenario():
        sock = Socket("/ws/events/", [(b"authorization", b"Token not-a-token")])
        assert await sock.open() == ("accept", None)
        closed = await sock.receive_output(5)
        await sock.close()
        return closed

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4401}


def test_console_ticket_is_its_own_credential_whatever_the_origin(admin_user):
    """The Origin rule leaves console sockets to their ticket: a foreign Origin gets the
    ticket's own answer (unknown ticket: 4404 after accept), not the handshake refusal."""
    foreign = (b"origin", b"http://127.0.0.1:9999")
    path = "/ws/console/1/vnc/" + "A" * 32 + "/"

    headers = [HOST, foreign, _cookie(admin_user)]

    async def scenario():
        sock = Socket(path, headers)
        opened = await sock.open()
        closed = await sock.receive_output(5)
        await sock.close()
        return opened, closed

    opened, closed = async_to_sync(scenario)()
    assert opened == ("accept", None)
    assert closed["type"] == "websocket.close" and closed["code"] == 4404


# --- bad paths and frames ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/console/1/vnc/short/", "/", "/ws/events"])
def test_websocket_path_matching_no_route_is_refused_cleanly(admin_user, path):
    result, _ = _open(path, [HOST, OWN_ORIGIN, _cookie(admin_user)])
    assert result == ("close", REFUSED)  # and Socket.close() re-raised nothing


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "{",
        "[" * 30_000 + "]" * 30_000,
        json.dumps({"subscribe": {"vms": [10**30]}}),
        json.dumps({"subscribe": {"hosts": [2**63]}}),
        json.dumps({"subscribe": {"tasks": [-1]}}),
        json.dumps({"subscribe": {"vms": "1"}}),
        json.dumps([1, 2]),
        json.dumps("subscribe"),
    ],
    ids=["text", "truncated", "deep", "id-1e30", "id-2**63", "negative", "not-list", "list", "str"],
)
def test_events_socket_answers_bad_frame_with_error_and_stays_open(admin_user, frame):
    headers = [HOST, OWN_ORIGIN, _cookie(admin_user)]

    async def scenario():
        sock = Socket("/ws/events/", headers)
        assert await sock.open() == ("accept", None)
        assert (await sock.receive_json())["type"] == "hello"
        await sock.send_text(frame)
        error = await sock.receive_json()
        # Still open: a good message is answered as usual.
        await sock.send_text(json.dumps({"subscribe": {"vms": [2**63 - 1]}}))
        good = await sock.receive_json()
        await sock.close()
        return error, good

    error, good = async_to_sync(scenario)()
    assert error["type"] == "error"
    assert good["type"] == "subscribed" and good["not_found"] == {"vms": [2**63 - 1]}


def test_events_socket_answers_binary_frame_with_error(admin_user):
    headers = [HOST, OWN_ORIGIN, _cookie(admin_user)]

    async def scenario():
        sock = Socket("/ws/events/", headers)
        await sock.open()
        await sock.receive_json()
        await sock.send_input({"type": "websocket.receive", "bytes": b"\x00\xff"})
        error = await sock.receive_json()
        await sock.close()
        return error

    assert async_to_sync(scenario)()["type"] == "error"
