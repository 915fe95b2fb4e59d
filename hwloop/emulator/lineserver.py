"""A line-oriented TCP server on a loopback port: what the emulated SMUs (Keithley TSP, B1500 FLEX) share.

A subclass calls ``_listen(host)`` in its ``__init__`` and implements ``_line(conn, text)``, which answers one
received line (without its ``\\n``) and returns False to drop the connection. One thread accepts, one thread
per connection reads; ``connected = False`` (a disconnect fault) refuses new connections and ends the
current ones. ``resource`` is the VISA resource string of the socket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Self

from hwloop.emulator.faults import Faults


def recv_lines(conn: socket.socket, running: Callable[[], bool] | None = None) -> Iterator[str]:
    """The lines a peer sends on ``conn`` (ASCII, without the ``\\n``), until it closes or the link fails.

    With ``running``, reading goes on while it returns True: it is asked before each read, and a read that
    times out (``conn``'s timeout) only asks again. Without it, a timeout ends the lines."""
    buf = b""
    while running is None or running():
        try:
            data = conn.recv(65536)
        except TimeoutError:
            if running is None:
                return
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("ascii", "replace")


class LineServer:
    thread_name = "hwloop-line-server"
    faults: Faults

    def _listen(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.resource = f"TCPIP::{host}::{self.port}::SOCKET"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: list[socket.socket] = []
        self.n_commands = 0
        self.connected = True

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for c in self._conns:
            c.close()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            if not self.connected:
                conn.close()
                continue
            self._conns.append(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            for text in recv_lines(conn, lambda: not self._stop.is_set() and self.connected):
                if not self._line(conn, text):
                    return

    def _draw_fault(self) -> str | None:
        """Count one command and draw its fault (``Faults.smu_fault``). A disconnect fault (drawn, or the
        ``smu_disconnect_after``-th command) drops the link now: it returns ``"smu_disconnect"``."""
        self.n_commands += 1
        fault = self.faults.smu_fault()
        if fault == "smu_disconnect" or 0 < self.faults.smu_disconnect_after < self.n_commands:
            self.connected = False
            return "smu_disconnect"
        return fault

    def _line(self, conn: socket.socket, text: str) -> bool:
        raise NotImplementedError
