"""Receiving many UDP datagrams with one system call: Linux ``recvmmsg(2)`` through ctypes.

Python's socket module receives one datagram per call, and the call (plus the exception that
ends every drain of a non-blocking socket) was most of the UDP listener's CPU time. ``MultiReceiver``
receives up to ``slots`` datagrams per call into preallocated buffers (one 64 KiB slot per
datagram: nothing is ever truncated) and returns them as (payload, sender) pairs; an empty socket
is an empty list, not an exception. Senders are decoded once per distinct socket address.

``available()`` says whether the platform has it (Linux with a C library exporting
``recvmmsg``); the listener falls back to ``recvfrom`` otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import sys
from functools import cache

MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_SLOT_BYTES = 65_536  # above the largest UDP payload (65 527 bytes over IPv6)
_NAME_BYTES = 128  # sizeof(struct sockaddr_storage)
_SENDER_CACHE_MAX = 65_536


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


@cache
def _recvmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    function.restype = ctypes.c_int
    return function


def available() -> bool:
    return _recvmmsg() is not None


def _sender(name: bytes) -> tuple[str, int]:
    """(host text, port) of a raw ``sockaddr_in``/``sockaddr_in6``."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, name[8:24])
        scope = int.from_bytes(name[24:28], sys.byteorder)
        if scope:  # as the socket module shows a link-local sender: fe80::1%eth0
            try:
                host += "%" + socket.if_indextoname(scope)
            except OSError:
                host += f"%{scope}"
        return host, port
    return "?", port


class MultiReceiver:
    """Receives up to ``slots`` datagrams per system call from one non-blocking UDP socket."""

    def __init__(self, sock: socket.socket, slots: int = 64) -> None:
        function = _recvmmsg()
        if function is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available on this platform")
        self._function = function
        self._fd = sock.fileno()
        self._slots = slots
        self._data = ctypes.create_string_buffer(slots * _SLOT_BYTES)
        self._names = ctypes.create_string_buffer(slots * _NAME_BYTES)
        self._iovecs = (_IoVec * slots)()
        self._headers = (_MMsgHdr * slots)()
        data_address, names_address = ctypes.addressof(self._data), ctypes.addressof(self._names)
        for slot in range(slots):
            self._iovecs[slot].iov_base = data_address + slot * _SLOT_BYTES
            self._iovecs[slot].iov_len = _SLOT_BYTES
            header = self._headers[slot].msg_hdr
            header.msg_name = names_address + slot * _NAME_BYTES
            header.msg_iov = ctypes.pointer(self._iovecs[slot])
            header.msg_iovlen = 1
        # The kernel writes each datagram's length and sender length into the header array:
        # read both through a memoryview of it (a ctypes attribute read per datagram is slower).
        stride = ctypes.sizeof(_MMsgHdr)
        self._length_at = [(slot * stride + _MMsgHdr.msg_len.offset) // 4 for slot in range(slots)]
        namelen_offset = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset
        self._namelen_at = [(slot * stride + namelen_offset) // 4 for slot in range(slots)]
        self._header_words = memoryview(self._headers).cast("B").cast("I")
        self._data_view = memoryview(self._data).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._senders: dict[bytes, tuple[str, int]] = {}
        self._used = slots  # headers whose msg_namelen the kernel may have changed

    def receive(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The datagrams waiting now (at most ``slots``), oldest first; ``[]`` when none.

        Raises ``OSError`` for an error other than "nothing to read" (e.g. a queued ICMP error).
        """
        words = self._header_words
        for at in self._namelen_at[:self._used]:  # the kernel overwrote it with the sender's length
            words[at] = _NAME_BYTES
        count = self._function(self._fd, self._headers, self._slots, MSG_DONTWAIT, None)
        self._used = max(count, 0)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(code, os.strerror(code))
        data, names, senders = self._data_view, self._names_view, self._senders
        received = []
        for slot in range(count):
            start = slot * _SLOT_BYTES
            payload = bytes(data[start:start + words[self._length_at[slot]]])
            name_start = slot * _NAME_BYTES
            name = bytes(names[name_start:name_start + words[self._namelen_at[slot]]])
            sender = senders.get(name)
            if sender is None:
                if len(senders) >= _SENDER_CACHE_MAX:
                    senders.clear()
                sender = senders[name] = _sender(name)
            received.append((payload, sender))
        return received

    @property
    def slots(self) -> int:
        return self._slots
