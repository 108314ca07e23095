"""The wire: inline commands, pipelines, protocol errors, limits and fuzzing.

Bad input must never crash the node nor harm other clients: every case here ends
by checking that a second, well-behaved client is still served.
"""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datanode.request import ProtocolError, RequestParser, split_inline
from tests.support import LOOPBACK, wait_until


def _conn(node) -> socket.socket:
    s = socket.create_connection((LOOPBACK, node.port), timeout=5)
    return s


def _read_until(s: socket.socket, predicate, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while not predicate(buf) and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def _closed(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _healthy(node) -> None:
    with _conn(node) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert _read_until(s, lambda b: b.endswith(b"\r\n")) == b"+PONG\r\n"


# ---------------------------------------------------------------------- pure parser
def test_split_inline_quoting() -> None:
    assert split_inline(b"SET  k   v") == [b"SET", b"k", b"v"]
    assert split_inline(b'SET k "hello world"') == [b"SET", b"k", b"hello world"]
    assert split_inline(b'SET k "a\\x41\\n"') == [b"SET", b"k", b"aA\n"]
    assert split_inline(b"SET k 'it\\'s'") == [b"SET", b"k", b"it's"]
    assert split_inline(b"") == []
    with pytest.raises(ProtocolError):
        split_inline(b'SET k "unterminated')
    with pytest.raises(ProtocolError):
        split_inline(b'SET k "a"b')


def test_parser_mixes_inline_and_multibulk_across_reads() -> None:
    p = RequestParser(512 * 1024 * 1024, 1024 * 1024, 1 << 30)
    assert p.feed(b"PING\r\nECHO hi\r\n*2\r\n$4\r\nECHO\r\n$2\r\nyo\r\n") == [
        [b"PING"], [b"ECHO", b"hi"], [b"ECHO", b"yo"]
    ]
    assert p.feed(b"*2\r\n$3\r\nGET") == []
    assert p.feed(b"\r\n$1\r\nk\r\n") == [[b"GET", b"k"]]
    assert p.feed(b"PI") == []
    assert p.feed(b"NG\r\n") == [[b"PING"]]


def test_parser_limits() -> None:
    p = RequestParser(1024 * 1024, 100, 1 << 30)
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        p.feed(b"*2\r\n$3\r\nSET\r\n$99999999999\r\n")
    p = RequestParser(1024 * 1024, 100, 1 << 30)
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        p.feed(b"*1000\r\n$3\r\n")
    p = RequestParser(1024 * 1024, 100, 1000)
    assert p.feed(b"*2\r\n$3\r\nSET\r\n$5000\r\n") == []
    with pytest.raises(ProtocolError, match="query buffer limit"):
        for _ in range(20):
            p.feed(b"x" * 100)


def test_parser_continuation_reads_are_not_inline() -> None:
    # hiredis consumes "*2 $3 GET" whole, so the next read starts with "$": it must
    # continue the request, not be taken as an inline command.
    p = RequestParser(1 << 20, 1000, 1 << 30)
    assert p.feed(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n") == [[b"PING"]]
    assert p.feed(b"$1\r\nk\r\n") == [[b"GET", b"k"]]
    assert p.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel") == []
    assert p.feed(b"lo\r\n") == [[b"SET", b"k", b"hello"]]
    # An inline command after multibulk traffic still works.
    p2 = RequestParser(1 << 20, 1000, 1 << 30)
    assert p2.feed(b"*1\r\n$4\r\nPING\r\n") == [[b"PING"]]
    assert p2.feed(b"ECHO hi\r\n") == [[b"ECHO", b"hi"]]


# ---------------------------------------------------------------------- server
def test_inline_commands_and_pipeline(datanode) -> None:
    with _conn(datanode) as s:
        s.sendall(b"PING\r\nSET inline:k \"a b\"\r\nGET inline:k\r\n\r\nECHO x\n")
        out = _read_until(s, lambda b: b.count(b"\r\n") >= 5)
        assert out == b"+PONG\r\n+OK\r\n$3\r\na b\r\n$1\r\nx\r\n"
        many = b"*2\r\n$4\r\nINCR\r\n$4\r\npipe\r\n" * 1000
        s.sendall(many)
        out = _read_until(s, lambda b: b.endswith(b":1000\r\n"))
        assert out.count(b"\r\n") == 1000 and out.endswith(b":1000\r\n")


@pytest.mark.parametrize(
    "junk, reply",
    [
        (b"*1\r\n:5\r\n", b"-ERR Protocol error"),
        (b"*2\r\n$3\r\nGET\r\n$99999999999999\r\n", b"-ERR Protocol error: invalid bulk length"),
        (b"*-10x\r\n", b"-ERR Protocol error"),
        (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length"),
        (b'SET a "broken\r\n', b"-ERR Protocol error: unbalanced quotes"),
        (b"x" * (70 * 1024), b"-ERR Protocol error: too big inline request"),
    ],
)
def test_protocol_errors_close_only_that_client(datanode, junk: bytes, reply: bytes) -> None:
    with _conn(datanode) as bystander, _conn(datanode) as bad:
        bystander.sendall(b"PING\r\n")
        assert _read_until(bystander, lambda b: b.endswith(b"\r\n")) == b"+PONG\r\n"
        bad.sendall(junk)
        out = _read_until(bad, lambda b: b.endswith(b"\r\n"))
        assert out.startswith(reply), out
        assert _closed(bad)
        bystander.sendall(b"PING\r\n")
        assert _read_until(bystander, lambda b: b.endswith(b"\r\n")) == b"+PONG\r\n"


def test_unknown_command_and_arity_keep_connection(datanode) -> None:
    with _conn(datanode) as s:
        s.sendall(b"DPING\r\nGET\r\nPING\r\n")
        out = _read_until(s, lambda b: b.endswith(b"+PONG\r\n"))
        assert out == (
            b"-ERR unknown command 'DPING', with args beginning with: \r\n"
            b"-ERR wrong number of arguments for 'get' command\r\n+PONG\r\n"
        )


def test_client_that_never_reads_is_disconnected(tmp_path) -> None:
    from tests.datanode_fixtures import start_datanode

    node = start_datanode(tmp_path / "d", "--client-output-buffer-limit", "2mb")
    try:
        c = node.client()
        c.set("big", b"x" * 100_000)
        hog = _conn(node)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.settimeout(0.2)
        sent = 0
        try:
            for _ in range(2000):  # ~200 MB of replies requested, none read
                hog.sendall(b"GET big\r\n" * 50)
                sent += 50
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        wait_until(
            lambda: all(b"cmd=get" not in line.encode() or False for line in [""]) and
            len(c.client_list()) == 1,
            timeout=10,
            what="the non-reading client to be disconnected",
        )
        assert c.ping()
        hog.close()
    finally:
        node.stop()


def test_maxclients(tmp_path) -> None:
    from tests.datanode_fixtures import start_datanode

    node = start_datanode(tmp_path / "d", "--maxclients", "3")
    try:
        held = [_conn(node) for _ in range(3)]
        for s in held:
            s.sendall(b"PING\r\n")
            assert _read_until(s, lambda b: b.endswith(b"\r\n")) == b"+PONG\r\n"
        extra = _conn(node)
        assert _read_until(extra, lambda b: b.endswith(b"\r\n")) == (
            b"-ERR max number of clients reached\r\n"
        )
        extra.close()
        held.pop().close()
        wait_until(node.answers, timeout=5, what="a slot to free up")
        for s in held:
            s.close()
    finally:
        node.stop()


_resp_chunks = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"*", b"$", b"\r\n", b"*2\r\n", b"$3\r\nGET\r\n", b"$-1\r\n", b"*-1\r\n",
             b"$9999999999\r\n", b"*0\r\n", b":1\r\n", b"+OK\r\n", b'"', b"'", b"\n",
             b"PING\r\n", b"*1\r\n$4\r\nPING\r\n", b"SET a b\r\n", b"\x00\xff"]
        ),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=_resp_chunks)
def test_fuzzed_input_never_harms_other_clients(datanode, chunks: list[bytes]) -> None:
    s = _conn(datanode)
    try:
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
    finally:
        s.close()
    _healthy(datanode)


def test_fuzzed_parser_raises_only_protocol_errors() -> None:
    @settings(max_examples=500, deadline=None)
    @given(chunks=_resp_chunks)
    def run(chunks: list[bytes]) -> None:
        p = RequestParser(1 << 20, 1000, 1 << 24)
        try:
            for chunk in chunks:
                for argv in p.feed(chunk):
                    assert isinstance(argv, list) and argv
        except ProtocolError:
            pass

    run()
