"""Exact-exchange tests over a real loopback socket (PyMeasure's ``expected_protocol`` idea).

``expected_protocol(pairs)`` starts a TCP server on 127.0.0.1 that expects the commands of ``pairs`` in
order, one line each, and answers ``reply`` (when it is not None) with ``CR LF``, as a FLEX instrument
does. It yields a VISA resource string for ``VisaAdapter(..., visa_library="@py")``: the driver's real
PyVISA path (pyvisa-py socket, terminations, timeouts) is what talks to it. On leaving the block it
fails the test if a command differed from the expected one, arrived after the last pair, or if a pair
was left unused. On the first wrong command the server closes the connection, so the driver sees a lost
link at once instead of waiting for a timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hwloop.emulator.lineserver import recv_lines


class _Server:
    def __init__(self, pairs: Sequence[tuple[str, str | None]], eol: str) -> None:
        self.pairs = list(pairs)
        self.eol = eol.encode()
        self.used = 0
        self.problem: str | None = None
        self.received: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.resource = f"TCPIP::127.0.0.1::{self.sock.getsockname()[1]}::SOCKET"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.connected = threading.Event()
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.connected.set()
        with conn:
            conn.settimeout(10.0)
            for line in recv_lines(conn):  # the emulated SMUs' line reader; 10 s of silence ends it
                cmd = line.rstrip("\r")
                self.received.append(cmd)
                if self.used >= len(self.pairs):
                    self.problem = f"unexpected command {cmd!r} after the last expected pair"
                    return
                want, reply = self.pairs[self.used]
                if cmd != want:
                    self.problem = f"command {self.used + 1}: expected {want!r}, got {cmd!r}"
                    return
                self.used += 1
                if reply is not None:
                    conn.sendall(reply.encode() + self.eol)

    def finish(self) -> None:
        if not self.connected.wait(1.0 if self.pairs else 0.05):
            self.sock.close()  # nobody connected: stop waiting in accept()
        self.thread.join(timeout=5)  # the conversation ends when the client closes its side
        self.sock.close()


@contextmanager
def expected_protocol(pairs: Sequence[tuple[str, str | None]], eol: str = "\r\n") -> Iterator[str]:
    """Serve ``pairs`` (command, reply or None) on a loopback socket; yield its VISA resource string.

    The block must close its adapter (or driver) before it ends, so that the server sees the end of the
    conversation; the checks run after the block.
    """
    server = _Server(pairs, eol)
    body_failed = True
    try:
        yield server.resource
        body_failed = False
    finally:
        server.finish()
        if not body_failed or server.problem:
            assert server.problem is None, f"{server.problem}; received so far: {server.received}"
            unused = server.pairs[server.used :]
            assert not unused, f"{len(unused)} expected exchange(s) never happened: {unused}"
