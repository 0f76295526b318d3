"""Network isolation for sandboxed children: a fresh network namespace in which the only
reachable address is 127.0.0.1 on the forwarded ports (the gateway), relayed by a thread
of the parent to the same ports on the host's loopback.

Creating a namespace needs CAP_SYS_ADMIN (root here, in CI and in most containers run as
root). Where the kernel or the container refuses, `NetJail.create` returns None and the
child shares the host's network: the sandbox records that in its result.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
from contextlib import suppress

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _call(fn, *args) -> None:
    if fn(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{fn.__name__}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind `fd`."""
    _call(_libc.setns, fd, CLONE_NEWNET)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


class NetJail:
    """One namespace and its relay thread; `fd` is what the child passes to `setns`."""

    def __init__(self, ns_fd: int, listeners: list[socket.socket]) -> None:
        self.fd = ns_fd
        self._listeners = listeners
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="sandbox-netjail", daemon=True)
        self._thread.start()

    @classmethod
    def create(cls, ports: list[int]) -> "NetJail | None":
        """A namespace forwarding `ports`, or None where namespaces are not allowed."""
        result: dict = {}

        def build() -> None:  # namespaces are per thread: do it in a throwaway one
            host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _call(_libc.unshare, CLONE_NEWNET)
                result["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                _loopback_up()
                listeners = []
                for port in ports:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.bind(("127.0.0.1", port))
                    sock.listen(64)
                    sock.setblocking(False)
                    listeners.append(sock)
                result["listeners"] = listeners
            except OSError as exc:
                result["error"] = exc
            finally:
                with suppress(OSError):
                    setns(host)
                os.close(host)

        t = threading.Thread(target=build)
        t.start()
        t.join()
        if "error" in result:
            if "fd" in result:
                os.close(result["fd"])
            log.info("sandbox: no network namespace (%s); the child shares the host network", result["error"])
            return None
        return cls(result["fd"], result["listeners"])

    def _relay(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._stop_r, selectors.EVENT_READ, ("stop", None))
        for sock in self._listeners:
            sel.register(sock, selectors.EVENT_READ, ("accept", sock.getsockname()[1]))
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in sel.select():
                    kind, arg = key.data
                    if kind == "stop":
                        return
                    if kind == "accept":
                        try:
                            inner, _ = key.fileobj.accept()
                        except OSError:
                            continue
                        try:
                            outer = socket.create_connection(("127.0.0.1", arg), timeout=5)
                        except OSError:
                            inner.close()  # the gateway is gone: the child sees a closed connection
                            continue
                        for a, b in ((inner, outer), (outer, inner)):
                            a.setblocking(False)
                            peers[a] = b
                            sel.register(a, selectors.EVENT_READ, ("data", None))
                        continue
                    src = key.fileobj
                    try:
                        data = src.recv(65536)
                        if data:
                            _send_all(peers[src], data)
                            continue
                    except OSError:
                        pass
                    for s in (src, peers.get(src)):
                        if s is not None and s in peers:
                            sel.unregister(s)
                            peers.pop(s)
                            s.close()
        finally:
            for s in list(peers) + self._listeners:
                s.close()
            sel.close()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._stop_r, self._stop_w, self.fd):
            with suppress(OSError):
                os.close(fd)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Blocking send with a bound, so a peer that stops reading cannot stall the relay for long."""
    sock.settimeout(10)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)
