"""What goes wrong on a host, in Paddock's names: the driver's exception classes and the libvirt
error codes callers outside ``hosts/driver/`` test for.

``DriverError`` is a ``libvirt.libvirtError`` (older code that still catches libvirt's class keeps
working) raised by every call made through a connection of ``hosts.driver.connection``; its
``get_error_code()`` compares with the constants below. ``HostCallTimeout`` is the one raised when
a host did not answer a call within its deadline: it is a ``DriverError`` (error code
``OPERATION_TIMEOUT``) and a ``HostConnectError`` (the host did not answer), and its message names
the call.
"""

from __future__ import annotations

import libvirt

# libvirt prints every error to stderr unless a handler is registered; errors reach us as
# exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# Error codes (``DriverError.get_error_code()``).
NO_DOMAIN = libvirt.VIR_ERR_NO_DOMAIN
NO_NETWORK = libvirt.VIR_ERR_NO_NETWORK
NO_STORAGE_POOL = libvirt.VIR_ERR_NO_STORAGE_POOL
NO_STORAGE_VOL = libvirt.VIR_ERR_NO_STORAGE_VOL
STORAGE_VOL_EXIST = libvirt.VIR_ERR_STORAGE_VOL_EXIST
OPERATION_INVALID = libvirt.VIR_ERR_OPERATION_INVALID
OPERATION_TIMEOUT = libvirt.VIR_ERR_OPERATION_TIMEOUT
NO_SUPPORT = libvirt.VIR_ERR_NO_SUPPORT
INVALID_ARG = libvirt.VIR_ERR_INVALID_ARG


class HostConnectError(Exception):
    """The host did not answer or refused; the message is libvirt's."""


class DriverError(libvirt.libvirtError):
    """A libvirt call on a host failed; ``get_error_code()`` and the message are libvirt's."""

    def __init__(self, message: str, code: int | None = None) -> None:
        # Not libvirtError.__init__: that reads this thread's last libvirt error, which belongs
        # to the call thread (or to no call at all).
        Exception.__init__(self, message)
        self.err = (
            code if code is not None else libvirt.VIR_ERR_INTERNAL_ERROR,
            libvirt.VIR_FROM_NONE,
            message,
            libvirt.VIR_ERR_ERROR,
            None,
            None,
            None,
            0,
            0,
        )

    @classmethod
    def from_libvirt(cls, exc: libvirt.libvirtError) -> DriverError:
        if isinstance(exc, DriverError):
            return exc
        error = cls.__new__(cls)
        Exception.__init__(error, *exc.args)
        error.err = exc.err
        return error


class HostCallTimeout(DriverError, HostConnectError):
    """The host did not answer a call within its deadline; the connection was given up."""

    def __init__(self, what: str, seconds: float, host: str = "") -> None:
        self.what = what
        self.seconds = seconds
        where = f" {host}" if host else ""
        super().__init__(
            f"The host{where} did not answer the call {what} within {seconds:g} s; "
            "the connection was given up.",
            OPERATION_TIMEOUT,
        )


def clean_error_text(message: str) -> str:
    """libvirt's message without the quoted input that XML parse errors carry.

    libxml2 reports a parse error as ``file:line: reason``, then the offending line of the input
    and a caret under it; that line is a file's contents (``/etc/shadow``'s first line, say) and
    must never reach a stored error.
    """
    lines = message.splitlines()
    kept = []
    for i, line in enumerate(lines):
        if line.strip() == "^" or (i + 1 < len(lines) and lines[i + 1].strip() == "^"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def libvirt_error_message(exc: BaseException) -> str:
    """The message of an error from a host call, fit to be stored and shown."""
    if isinstance(exc, libvirt.libvirtError):
        return clean_error_text(exc.get_error_message() or str(exc))
    return str(exc)


def error_code(exc: BaseException) -> int | None:
    """libvirt's error code of ``exc``, or None when it is no driver error."""
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_code()
    return None
