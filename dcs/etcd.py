"""The etcd v3 adapter of the store port, on aetcd (gRPC).

Requests go through ``aetcd.Client`` (range, put, delete, txn, lease grant,
refresh and revoke), each with a gRPC deadline of ``timeout`` seconds. A lease
refresh is one request and one reply (``Client.refresh_lease`` sends a single
keepalive and half-closes the stream), so the caller controls the timing and
knows when the refresh was sent (DESIGN §3).

The watch uses aetcd's generated stub on the client's channel instead:
``Client.watch`` hands events out one by one (revision boundaries are lost) and
does not resume after a reconnect. Here each :meth:`EtcdStore.watch` is one gRPC
watch stream, delivering batches per revision, reopened after the last revision
delivered when it breaks.

Every library error is translated here into :mod:`dcs.errors`. With several
endpoints, a request that finds its endpoint unavailable moves the store to the
next one (the request itself still fails; the caller's retry uses the next).

TLS: aetcd 1.0.0 opens its channel inside ``Client.connect`` with a hard-wired
``grpc.aio.insecure_channel``. For TLS the store uses :class:`_TlsClient`, a
subclass whose ``connect`` opens a ``grpc.aio.secure_channel`` with
``grpc.ssl_channel_credentials`` instead (the library module is left as is).
TLS is on for ``https://`` endpoints, when a CA or client certificate is given,
or with ``tls=True``; without ``ca_cert`` the system's trusted roots are used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc, transactions, watcher
from aetcd.utils import prefix_range_end

from .errors import LeaseLost, StoreError, StoreUnavailable, WatchCompacted
from .port import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    KeyValue,
    Lease,
    LeaseRef,
    Op,
    Put,
    Snapshot,
    WatchBatch,
    WatchEvent,
    lease_id,
)
from .retry import DEFAULT_POLICY, RetryPolicy, Sleep

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 2379

#: gRPC channel options: reconnect quickly after an etcd restart (gRPC's default
#: backoff grows to 120 s), notice a dead peer on idle streams (etcd refuses
#: pings more often than every 5 s), accept large range replies.
CHANNEL_OPTIONS: Mapping[str, Any] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

# The outer asyncio timeout only backs up gRPC's own deadline.
_GRACE = 0.25

_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

_COMPARE_TARGETS: Mapping[CompareTarget, type[transactions.BaseCompare]] = {
    CompareTarget.VALUE: transactions.Value,
    CompareTarget.MOD_REVISION: transactions.Mod,
    CompareTarget.CREATE_REVISION: transactions.Create,
    CompareTarget.VERSION: transactions.Version,
}
_COMPARE_OPS: Mapping[CompareOp, int] = {
    CompareOp.EQUAL: rpc.Compare.EQUAL,
    CompareOp.NOT_EQUAL: rpc.Compare.NOT_EQUAL,
    CompareOp.LESS: rpc.Compare.LESS,
    CompareOp.GREATER: rpc.Compare.GREATER,
}


class EtcdStore:
    """:class:`dcs.port.Store` on etcd v3.

    ``endpoints``: ``"host:port"``, ``"http://host:port"`` or ``"https://host:port"``,
    one or several (all http or all https).
    ``timeout``: seconds each request may take (gRPC deadline).
    ``reconnect``: the backoff between watch reconnects (attempts unbounded).
    ``ca_cert``, ``cert_cert``, ``cert_key``: PEM files (the CA bundle that signed
    etcd's server certificate; the client certificate and its key, both or
    neither), read once here. ``tls``: force TLS on or off; by default it is on
    for ``https://`` endpoints or when any of the files is given.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        reconnect: RetryPolicy = DEFAULT_POLICY,
        sleep: Sleep = asyncio.sleep,
        channel_options: Mapping[str, Any] | None = None,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        tls: bool | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        parsed = [_parse_endpoint(e) for e in endpoints]
        if not parsed:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = [(host, port) for _, host, port in parsed]
        self._credentials = _tls_credentials(
            {scheme for scheme, _, _ in parsed}, tls, ca_cert, cert_cert, cert_key
        )
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._timeout = timeout
        self._username = username
        self._password = password
        self._reconnect = reconnect
        self._sleep = sleep
        self._options = {**CHANNEL_OPTIONS, **(channel_options or {})}
        self._index = 0
        self._client: aetcd.Client | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdStore({self.endpoint!r})"

    @property
    def tls(self) -> bool:
        """Whether requests go over TLS."""
        return self._credentials is not None

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        host, port = self._endpoints[self._index]
        return f"{host}:{port}"

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- key-value

    async def load(self, prefix: str) -> Snapshot:
        if not prefix:
            raise ValueError("load needs a non-empty prefix")
        got = await self._call(f"load {prefix}", lambda c: c.get_prefix(_key_bytes(prefix)))
        return Snapshot.of(prefix, got.header.revision, [_key_value(kv) for kv in got.kvs])

    async def get(self, key: str) -> KeyValue | None:
        got = await self._call(f"get {key}", lambda c: c.get(_key_bytes(key)))
        return None if got is None else _key_value(got)

    async def put(self, key: str, value: bytes, lease: LeaseRef | None = None) -> int:
        lid = lease_id(lease)
        done = await self._call(
            f"put {key}", lambda c: c.put(_key_bytes(key), value, lease=lid), lease=lid
        )
        return int(done.header.revision)

    async def cas(self, compares: Sequence[Compare], ops: Sequence[Op]) -> bool:
        compare = [_compare(c) for c in compares]
        success = [_operation(op) for op in ops]
        lid = next((lease_id(op.lease) for op in ops if isinstance(op, Put) and op.lease), 0)
        succeeded, _ = await self._call(
            "txn", lambda c: c.transaction(compare=compare, success=success, failure=[]), lease=lid
        )
        return bool(succeeded)

    async def create(self, key: str, value: bytes, lease: LeaseRef | None = None) -> bool:
        return await self.cas([Compare.absent(key)], [Put(key, value, lease)])

    async def delete(self, key: str) -> bool:
        done = await self._call(f"delete {key}", lambda c: c.delete(_key_bytes(key)))
        return done is not None

    # ----------------------------------------------------------------- leases

    async def grant(self, ttl: int) -> Lease:
        if ttl < 1:
            raise ValueError(f"lease TTL must be >= 1 s, got {ttl}")
        granted = await self._call("lease grant", lambda c: c.lease(ttl))
        return Lease(int(granted.id), int(granted.ttl))

    async def keepalive_once(self, lease: LeaseRef) -> int:
        lid = lease_id(lease)
        reply = await self._call("lease keepalive", lambda c: c.refresh_lease(lid), lease=lid)
        if reply is None:
            raise StoreUnavailable(f"etcd {self.endpoint}: keepalive stream closed without a reply")
        if reply.TTL <= 0:  # etcd answers TTL 0 for a lease it does not know
            raise LeaseLost(lid)
        return int(reply.TTL)

    async def revoke(self, lease: LeaseRef) -> bool:
        lid = lease_id(lease)
        try:
            await self._call("lease revoke", lambda c: c.revoke_lease(lid), lease=lid)
        except LeaseLost:
            return False
        return True

    # ----------------------------------------------------------------- watch

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        """See :meth:`dcs.port.Store.watch`. One gRPC stream per call; when it
        breaks (etcd restarted, unreachable) it is reopened after a backoff, for as
        long as the caller iterates, from the revision after the last batch
        delivered. Ends with ``WatchCompacted``, a refused watch (``StoreError``)
        or the store being closed."""
        if not prefix:
            raise ValueError("watch needs a non-empty prefix")
        if start_revision < 1:
            raise ValueError(f"start_revision must be >= 1, got {start_revision}")
        key = _key_bytes(prefix)
        next_rev = start_revision
        failures = 0
        while True:
            client = self._current()  # StoreError once closed: ends the watch
            call: Any = None
            try:
                await client.connect()
                call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
                await call.write(_watch_create(key, next_rev))
                async with asyncio.timeout(self._timeout):
                    created = _checked(await call.read())
                if not created.created:
                    raise StoreError(f"etcd watch {prefix}: no creation reply ({created})")
                failures = 0
                while True:
                    reply = _checked(await call.read())
                    if reply.events:
                        for batch in _batches(reply.events, next_rev):
                            yield batch
                            next_rev = batch.revision + 1
                    elif not reply.created and reply.header.revision >= next_rev:
                        # A progress notification: nothing under the prefix up to here.
                        next_rev = reply.header.revision + 1
            except asyncio.CancelledError:
                if _cancelled_by_caller():
                    raise
                lost: StoreError = StoreUnavailable("watch stream cancelled (channel closed)")
            except StoreUnavailable as exc:
                lost = exc
            except StoreError:
                raise
            except Exception as exc:
                lost = self._translate(f"watch {prefix}", exc, client)
                if not isinstance(lost, StoreUnavailable):
                    raise lost from exc
            finally:
                if call is not None:
                    call.cancel()
            failures += 1
            delay = self._reconnect.backoff(failures)
            log.warning(
                "etcd watch %s interrupted (%s); resuming from revision %d in %.2fs",
                prefix,
                lost,
                next_rev,
                delay,
            )
            await self._sleep(delay)

    # ----------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close the connection; pending and later calls raise ``StoreError``."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            self._retire(client)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # ----------------------------------------------------------------- plumbing

    def _current(self) -> aetcd.Client:
        if self._closed:
            raise StoreError("etcd store is closed")
        if self._client is None:
            host, port = self._endpoints[self._index]
            settings: dict[str, Any] = dict(
                host=host,
                port=port,
                username=self._username,
                password=self._password,
                timeout=self._timeout,  # gRPC takes float seconds
                options=dict(self._options),
            )
            if self._credentials is None:
                self._client = aetcd.Client(**settings)
            else:
                self._client = _TlsClient(self._credentials, **settings)
        return self._client

    def _replace(self, client: aetcd.Client, why: str) -> None:
        """Drop ``client`` (if still current): the next request opens a new one,
        on the next endpoint when there are several."""
        if client is not self._client:
            return
        old = self.endpoint
        self._client = None
        self._index = (self._index + 1) % len(self._endpoints)
        log.warning("etcd %s: %s; next requests go to %s", old, why, self.endpoint)
        self._retire(client)

    def _retire(self, client: aetcd.Client) -> None:
        async def close() -> None:
            try:
                await client.close()
            except Exception as exc:  # closing a broken channel; nothing to do
                log.debug("closing etcd client: %r", exc)

        task = asyncio.get_running_loop().create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _call(
        self, what: str, request: Callable[[aetcd.Client], Awaitable[T]], *, lease: int = 0
    ) -> T:
        client = self._current()
        try:
            async with asyncio.timeout(self._timeout + _GRACE):
                return await request(client)
        except asyncio.CancelledError:
            if _cancelled_by_caller():
                raise
            raise StoreUnavailable(f"etcd {what}: request cancelled (channel closed)") from None
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(what, exc, client, lease=lease) from exc

    def _translate(
        self, what: str, exc: BaseException, client: aetcd.Client, *, lease: int = 0
    ) -> StoreError:
        """The one place aetcd / gRPC errors become store errors."""
        if isinstance(exc, StoreError):
            return exc
        where = f"etcd {self.endpoint}: {what}"
        code, details = _status(exc)
        if _unavailable(exc, code, details):
            if len(self._endpoints) > 1:
                self._replace(client, f"unavailable ({details})")
            return StoreUnavailable(f"{where}: {details}")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            # aetcd never renews its auth token: open a new client, which logs in again.
            self._replace(client, f"authentication token rejected ({details})")
            return StoreUnavailable(f"{where}: {details}")
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details and lease:
            return LeaseLost(lease)
        return StoreError(f"{where}: {details}")


# --------------------------------------------------------------------------- TLS


class _TlsClient(aetcd.Client):
    """``aetcd.Client`` over a TLS channel.

    aetcd 1.0.0 builds its channel inside ``connect`` (``rpc.insecure_channel``,
    no hook), so this ``connect`` is the library's with the channel opened by
    ``grpc.aio.secure_channel``: the same stubs, token login and watcher follow.
    Everything else (requests, ``close``) is the library's own code. Re-check
    this method when upgrading aetcd (pinned in pyproject.toml).
    """

    def __init__(self, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]  # another task is connecting: wait
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            self.channel = grpc.aio.secure_channel(
                f"{self._host}:{self._port}", self._credentials, options=list(self._options.items())
            )
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        except BaseException:
            if self.channel is not None:  # a failed login: do not leak the channel
                await self.channel.close()
            self._init_channel_attrs()
            raise
        finally:
            self._is_connecting = False


def _tls_credentials(
    schemes: set[str],
    tls: bool | None,
    ca_cert: str | None,
    cert_cert: str | None,
    cert_key: str | None,
) -> grpc.ChannelCredentials | None:
    """The channel credentials, or None for plaintext; ValueError for settings that
    contradict each other or files that cannot be read."""
    if "http" in schemes and "https" in schemes:
        raise ValueError("etcd endpoints mix http:// and https://")
    files = bool(ca_cert or cert_cert or cert_key)
    if bool(cert_cert) != bool(cert_key):
        raise ValueError("give both the etcd client certificate and its key, or neither")
    if tls is None:
        tls = "https" in schemes or files
    if not tls:
        if "https" in schemes:
            raise ValueError("https:// etcd endpoints with tls=False")
        if files:
            raise ValueError("etcd TLS certificate files given with tls=False")
        return None
    if "http" in schemes:
        raise ValueError("http:// etcd endpoints with TLS: use https://")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(ca_cert, "CA certificate"),
        private_key=_read_pem(cert_key, "client key"),
        certificate_chain=_read_pem(cert_cert, "client certificate"),
    )


def _read_pem(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read the etcd TLS {what} {path}: {exc}") from exc
    if b"-----BEGIN" not in data:
        raise ValueError(f"etcd TLS {what} {path} is not PEM")
    return data


# --------------------------------------------------------------------------- helpers


def _parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``(scheme, host, port)``; scheme is "", "http" or "https"."""
    text = endpoint.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    if parts.scheme not in ("", "http", "https"):
        raise ValueError(f"etcd endpoint {endpoint!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {endpoint!r} has no host")
    return parts.scheme, parts.hostname, parts.port or DEFAULT_PORT


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _key_text(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _key_value(kv: Any) -> KeyValue:
    """From an etcd ``mvccpb.KeyValue`` or aetcd's wrapper of one."""
    return KeyValue(
        key=_key_text(kv.key),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _compare(c: Compare) -> transactions.BaseCompare:
    built = _COMPARE_TARGETS[c.target](_key_bytes(c.key))
    built.op = _COMPARE_OPS[c.op]
    built.value = c.operand
    return built


def _operation(op: Op) -> transactions.Put | transactions.Delete:
    if isinstance(op, Put):
        return transactions.Put(_key_bytes(op.key), op.value, lease=lease_id(op.lease))
    if isinstance(op, Delete):
        return transactions.Delete(_key_bytes(op.key))
    raise TypeError(f"not a store operation: {op!r}")


def _watch_create(key: bytes, start_revision: int) -> Any:
    return rpc.WatchRequest(
        create_request=rpc.WatchCreateRequest(
            key=key,
            range_end=prefix_range_end(key),
            start_revision=start_revision,
            progress_notify=True,
        )
    )


def _checked(reply: Any) -> Any:
    """A watch reply, or the error it stands for."""
    if reply is grpc.aio.EOF:
        raise StoreUnavailable("etcd closed the watch stream")
    if reply.compact_revision:
        raise WatchCompacted(int(reply.compact_revision))
    if reply.canceled:
        raise StoreError(f"etcd cancelled the watch: {reply.cancel_reason or 'no reason given'}")
    return reply


def _batches(events: Sequence[Any], next_rev: int) -> list[WatchBatch]:
    """Group a reply's events by revision, dropping any already delivered."""
    batches: list[WatchBatch] = []
    group: list[WatchEvent] = []
    for ev in events:
        kv = ev.kv
        if kv.mod_revision < next_rev:
            continue
        if group and group[-1].mod_revision != kv.mod_revision:
            batches.append(WatchBatch(group[-1].mod_revision, tuple(group)))
            group = []
        deleted = ev.type == rpc.Event.DELETE
        group.append(
            WatchEvent(
                key=_key_text(kv.key),
                value=None if deleted else bytes(kv.value),
                mod_revision=int(kv.mod_revision),
                create_revision=0 if deleted else int(kv.create_revision),
                lease=0 if deleted else int(kv.lease),
            )
        )
    if group:
        batches.append(WatchBatch(group[-1].mod_revision, tuple(group)))
    return batches


def _cancelled_by_caller() -> bool:
    """True when the running task is being cancelled; False when a CancelledError
    only means gRPC cancelled a call because its channel was closed under it."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _status(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    for err in (exc, exc.__cause__):
        if isinstance(err, grpc.aio.AioRpcError):
            return err.code(), err.details() or err.code().name
    if isinstance(exc, aetcd.ConnectionFailedError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, aetcd.ConnectionTimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    return None, str(exc) or type(exc).__name__


def _unavailable(exc: BaseException, code: grpc.StatusCode | None, details: str) -> bool:
    if isinstance(exc, (TimeoutError, OSError, grpc.aio.UsageError)):
        return True  # our deadline; a socket error; a channel closed under the call
    if code in _UNAVAILABLE_CODES:
        return True
    text = details.lower()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "too many requests" in text
    if code == grpc.StatusCode.UNKNOWN:
        return "stream removed" in text or "socket closed" in text
    return False


__all__ = ["CHANNEL_OPTIONS", "EtcdStore"]
