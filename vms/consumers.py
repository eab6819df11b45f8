"""Console websockets: a ticket opens one VNC display or serial console, once.

The socket carries the console's raw bytes both ways as binary frames: RFB for VNC (what
noVNC speaks), the serial line for the serial console (text frames from xterm.js are sent to
the guest as UTF-8). A refused ticket is answered by closing with 4403 or 4404 before any byte
of a console, a VM on a simulated host with 4501; the close frame's reason is the refusal's
sentence. See ``vms.console`` for the close codes and their sentences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from hosts.driver.console import (
    ConsoleBackend,
    ConsoleBackendError,
    ConsoleUnavailable,
    open_console,
)
from panel.events import groups_for_tenant

from . import console
from .console_models import ConsoleKind

logger = logging.getLogger(__name__)


class ConsoleConsumer(AsyncWebsocketConsumer):
    """Redeem the ticket, open the console's backend (``hosts.driver.console``), then pipe
    bytes until either side closes."""

    kind: str = ""

    ticket = None
    backend: ConsoleBackend | None = None
    _pump: asyncio.Task | None = None
    _heartbeat: asyncio.Task | None = None
    _closing = False

    async def connect(self):
        kwargs = self.scope["url_route"]["kwargs"]
        offered = self.scope.get("subprotocols") or []
        self.subprotocol = "binary" if "binary" in offered else None
        try:
            self.ticket = await database_sync_to_async(console.redeem_ticket)(
                kwargs.get("ticket", ""),
                vm_id=int(kwargs.get("vm_id", 0)),
                kind=self.kind,
                user=self.scope.get("user"),
            )
        except console.TicketRefused as exc:
            await self._refuse(exc.code, str(exc))
            return
        vm = self.ticket.vm
        if vm.host.simulated:
            # libvirt's test driver runs no guest: there is no display nor serial line to open.
            await self._refuse(
                console.CLOSE_SIMULATED, console.CLOSE_SENTENCES[console.CLOSE_SIMULATED]
            )
            return
        try:
            self.backend = await open_console(self.kind, vm.host, vm.uuid)
        except ConsoleUnavailable as exc:
            await self._refuse(console.CLOSE_UNAVAILABLE, str(exc))
            return
        except ConsoleBackendError as exc:
            await self._refuse(console.CLOSE_BACKEND, str(exc))
            return
        except Exception:
            logger.exception("could not open the %s console of VM %s", self.kind, vm.pk)
            await self._refuse(console.CLOSE_BACKEND, "The console could not be opened.")
            return
        await self.accept(self.subprotocol)
        await database_sync_to_async(console.session_opened)(self.ticket.pk)
        logger.info(
            "%s opened the %s console of VM %s (%s)",
            self.ticket.user.username, self.kind, vm.pk, vm.name,
        )  # fmt: skip
        self._pump = asyncio.create_task(self._pump_backend())
        self._heartbeat = asyncio.create_task(self._keep_alive())
        await self._publish_status()

    async def _refuse(self, code: int, reason: str) -> None:
        """Open and at once close the socket with ``code``: a browser sees the code (a socket
        refused during the handshake shows only 1006). No console byte is ever sent."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:  # redeemed, but the console could not be opened
            await database_sync_to_async(console.session_closed)(ticket.pk)
        logger.info("%s console refused (%s): %s", self.kind, code, reason)
        self._closing = True
        await self.accept(self.subprotocol)
        # The reason a browser reads: the refusal's sentence; a backend failure's details stay
        # in the log (they name the host's insides).
        said = console.CLOSE_SENTENCES[code] if code == console.CLOSE_BACKEND else reason
        await self.close(code=code, reason=console.close_reason(said))

    async def _pump_backend(self) -> None:
        code = console.CLOSE_NORMAL
        try:
            while True:
                data = await self.backend.read()
                if not data:
                    break
                await self.send(bytes_data=data)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("%s console of VM %s failed", self.kind, self._vm_id(), exc_info=True)
            code = console.CLOSE_BACKEND
        if not self._closing:
            self._closing = True
            await self.close(code=code)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(console.ALIVE_SECONDS)
            await database_sync_to_async(console.session_alive)(self.ticket.pk)

    async def receive(self, text_data=None, bytes_data=None):
        if self.backend is None or self._closing:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        if not data:
            return
        try:
            await self.backend.write(data)
        except Exception as exc:
            logger.info("%s console of VM %s: input refused: %s", self.kind, self._vm_id(), exc)
            if not self._closing:
                self._closing = True
                await self.close(code=console.CLOSE_BACKEND)

    async def disconnect(self, code):
        self._closing = True
        for task in (self._pump, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        backend, self.backend = self.backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.close()
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            await database_sync_to_async(console.session_closed)(ticket.pk)
            if backend is not None:
                await self._publish_status(ticket)

    def _vm_id(self):
        return self.ticket.vm_id if self.ticket is not None else None

    async def _publish_status(self, ticket=None) -> None:
        """Tell the VM page (and the tenant's and the admins' listeners) who is connected."""
        ticket = ticket or self.ticket
        if self.channel_layer is None or ticket is None:
            return
        try:
            event = await database_sync_to_async(console.status_event)(ticket.vm_id, self.kind)
            groups = [f"vm.{ticket.vm_id}", *groups_for_tenant(ticket.vm.tenant_id)]
            for group in groups:
                await self.channel_layer.group_send(
                    group, {"type": "paddock.event", "event": event}
                )
        except Exception:
            logger.warning("could not publish the console status", exc_info=True)

    async def paddock_event(self, message):
        """Console sockets join no group; ignore anything addressed to this channel."""


class VncConsoleConsumer(ConsoleConsumer):
    kind = ConsoleKind.VNC


class SerialConsoleConsumer(ConsoleConsumer):
    kind = ConsoleKind.SERIAL
