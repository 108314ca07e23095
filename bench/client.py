"""A tiny blocking RESP client on a raw socket (hiredis parses), plus a bulk key loader."""

from __future__ import annotations

import socket
import time

import hiredis

LOOPBACK = "127.0.0.1"


def encode(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class Client:
    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def read(self, n: int) -> list[object]:
        """Read ``n`` replies; error replies come back as ``hiredis.ReplyError`` objects."""
        out: list[object] = []
        while len(out) < n:
            r = self.reader.gets()
            if r is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.reader.feed(data)
                continue
            out.append(r)
        return out

    def call_raw(self, *args: bytes | str | int) -> object:
        """One command; the reply as is (a ReplyError object for an error reply)."""
        self.sock.sendall(encode(*args))
        return self.read(1)[0]

    def call(self, *args: bytes | str | int) -> object:
        reply = self.call_raw(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"{args[0]!s} failed: {reply}")
        return reply

    def info(self, section: str = "") -> dict[str, str]:
        raw = self.call("INFO", section) if section else self.call("INFO")
        assert isinstance(raw, bytes)
        fields: dict[str, str] = {}
        for line in raw.decode(errors="replace").splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        return fields


# SET key:%012d <16 bytes>; the same key names redis-benchmark -r uses (key:%012d).
_SET16 = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$16\r\n%016d\r\n"


def load_keys(port: int, n: int, batch: int = 10_000) -> tuple[float, int]:
    """SET key:000000000000 … key:<n-1> to 16-byte values, pipelined in batches.

    Returns (seconds, error replies). Values are the key number, zero-padded to 16 bytes.
    """
    errors = 0
    t0 = time.perf_counter()
    with Client(port, timeout=300) as c:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            c.sock.sendall(b"".join([_SET16 % (i, i) for i in range(start, stop)]))
            for r in c.read(stop - start):
                if isinstance(r, hiredis.ReplyError):
                    errors += 1
    return time.perf_counter() - t0, errors
