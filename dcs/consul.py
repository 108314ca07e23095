"""The Consul adapter: service registration and health reads (DESIGN §6).

Consul is for discovery and an early health signal only; etcd decides. Each
sidecar registers its node as ``slotkeeper-datanode`` (id = node_id) with role,
shard and state tags, meta (node_id, epoch, replica_id) and an HTTP check on its
``/health``; coordinators register ``slotkeeper-coordinator``.

Built on py-consul's asyncio client (``consul.aio``, aiohttp). Every call is
bounded by ``timeout`` seconds (a blocking health query by its ``wait`` plus
that) and every library error is translated into :mod:`dcs.errors`:
unreachable, timed out or a 5xx answer → ``StoreUnavailable``; a refused
request → ``StoreError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio

from .errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DATANODE_SERVICE = "slotkeeper-datanode"
COORDINATOR_SERVICE = "slotkeeper-coordinator"
DEFAULT_PORT = 8500

# Consul adds up to wait/16 of jitter to a blocking query's wait.
_WAIT_JITTER = 1 / 16


class CheckStatus(enum.StrEnum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"

    @classmethod
    def worst(cls, statuses: Iterable[str]) -> CheckStatus:
        """The worst of ``statuses`` (unknown words count as critical); passing if none."""
        rank = {cls.PASSING: 0, cls.WARNING: 1, cls.CRITICAL: 2}
        worst = cls.PASSING
        for text in statuses:
            status = cls(text) if text in rank else cls.CRITICAL
            if rank[status] > rank[worst]:
                worst = status
        return worst


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """An HTTP check Consul runs against ``url`` (2xx passing, 429 warning, else
    critical). Consul runs checks at most once a second and deregisters a
    service critical for longer than ``deregister_after`` (at least 60 s; None:
    never)."""

    url: str
    interval: float = 1.0
    timeout: float = 1.0
    deregister_after: float | None = 60.0

    def definition(self) -> dict[str, Any]:
        return consul.Check.http(
            self.url,
            _duration(self.interval),
            timeout=_duration(self.timeout),
            deregister=None if self.deregister_after is None else _duration(self.deregister_after),
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """A service instance as registered with the local agent."""

    name: str
    id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    check: HttpCheck | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    """A service instance as the catalog shows it, with its health: ``status`` is
    the worst of its own checks and its node's (``serfHealth``)."""

    id: str
    name: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str]
    status: CheckStatus
    output: str = ""  # the output of the instance's failing (or first) check

    def tag(self, name: str) -> str | None:
        """The value of a ``name:value`` tag, or ``None``."""
        prefix = f"{name}:"
        return next((t[len(prefix) :] for t in self.tags if t.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """The instances of a service at Consul ``index`` (pass it back to block
    until something changes)."""

    index: int
    instances: tuple[Instance, ...]


def datanode_registration(
    node_id: str,
    address: str,
    port: int,
    *,
    role: str,
    shard: str,
    state: str,
    epoch: int,
    replica_id: int,
    check: HttpCheck | None,
) -> Registration:
    """DESIGN §6: tags ``role:<role>``, ``shard:<id>`` (when in a shard),
    ``state:<STATE>``, plus the bare role (``primary``) so that Consul DNS names
    such as ``primary.slotkeeper-datanode.service.consul`` resolve; meta node_id,
    epoch, replica_id."""
    tags = [f"role:{role}", role]
    if shard:
        tags.append(f"shard:{shard}")
    tags.append(f"state:{state}")
    meta = {"node_id": node_id, "epoch": str(epoch), "replica_id": str(replica_id)}
    return Registration(
        DATANODE_SERVICE, node_id, address, port, tuple(tags), MappingProxyType(meta), check
    )


def coordinator_registration(
    instance_id: str, address: str, port: int, *, check: HttpCheck | None
) -> Registration:
    return Registration(COORDINATOR_SERVICE, instance_id, address, port, (), check=check)


class ConsulCatalog:
    """Registration with, and health reads from, one Consul agent.

    ``addr``: ``"host:port"`` or ``"http(s)://host:port"``. ``token``: an ACL
    token (when given it wins over ``CONSUL_HTTP_TOKEN``, which py-consul would
    otherwise prefer). Use as ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        addr: str,
        token: str | None = None,
        *,
        timeout: float = 2.0,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(addr if "://" in addr else f"//{addr}")
        if parts.scheme not in ("", "http", "https") or not parts.hostname:
            raise ValueError(f"bad Consul address {addr!r}: expected host:port or a URL")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self._host = parts.hostname
        self._port = parts.port or DEFAULT_PORT
        self._scheme = parts.scheme or "http"
        self._token = token
        self._timeout = timeout
        self._verify = verify
        self._client: consul.aio.Consul | None = None
        self._registered: dict[str, Registration] = {}

    def __repr__(self) -> str:
        return f"ConsulCatalog('{self._scheme}://{self._host}:{self._port}')"

    async def __aenter__(self) -> ConsulCatalog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- registration

    async def register(self, registration: Registration) -> None:
        """Register (or re-register, replacing tags, meta and check) an instance."""
        reg = registration
        ok = await self._call(
            f"register {reg.name}/{reg.id}",
            lambda c: c.agent.service.register(
                reg.name,
                service_id=reg.id,
                address=reg.address,
                port=reg.port,
                tags=list(reg.tags),
                meta=dict(reg.meta),
                check=None if reg.check is None else reg.check.definition(),
                replace_existing_checks=True,
            ),
        )
        if not ok:
            raise StoreError(f"consul refused to register {reg.name}/{reg.id}")
        self._registered[reg.id] = reg
        log.info("consul: registered %s/%s tags=%s", reg.name, reg.id, ",".join(reg.tags))

    async def update(
        self,
        service_id: str,
        *,
        tags: Iterable[str] | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> Registration:
        """Change the tags and/or meta of an instance registered by this catalog
        (Consul has no partial update: the instance is registered again)."""
        current = self._registered.get(service_id)
        if current is None:
            raise StoreError(f"service {service_id!r} was not registered through this catalog")
        changed = dataclasses.replace(
            current,
            tags=current.tags if tags is None else tuple(tags),
            meta=current.meta if meta is None else MappingProxyType(dict(meta)),
        )
        if changed != current:
            await self.register(changed)
        return changed

    async def deregister(self, service_id: str) -> None:
        """Remove an instance from the local agent. Idempotent: an unknown id is
        not an error (Consul before 1.9 does not even tell)."""
        await self._call(
            f"deregister {service_id}", lambda c: c.agent.service.deregister(service_id)
        )
        self._registered.pop(service_id, None)
        log.info("consul: deregistered %s", service_id)

    # ----------------------------------------------------------------- reads

    async def health(
        self,
        service: str,
        *,
        index: int | None = None,
        wait: float | None = None,
        passing_only: bool = False,
    ) -> ServiceHealth:
        """The instances of ``service`` with their health. With ``index`` (from a
        previous answer) this is a blocking query: it returns when something
        changed or after ``wait`` seconds."""
        budget = self._timeout
        kwargs: dict[str, Any] = {"passing": passing_only}
        if index is not None:
            kwargs["index"] = index
            if wait is not None:
                kwargs["wait"] = _duration(wait)
            budget += (wait if wait is not None else 300.0) * (1 + _WAIT_JITTER)
        got = await self._call(
            f"health of {service}", lambda c: c.health.service(service, **kwargs), timeout=budget
        )
        new_index, entries = got
        return ServiceHealth(int(new_index), tuple(_instance(e) for e in entries or ()))

    async def instances(self, service: str) -> tuple[Instance, ...]:
        return (await self.health(service)).instances

    # ----------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close the HTTP session (instances stay registered)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _connect(self) -> consul.aio.Consul:
        # Created lazily: the aiohttp session must be made inside the running loop.
        if self._client is None:
            self._client = consul.aio.Consul(
                host=self._host,
                port=self._port,
                scheme=self._scheme,
                # py-consul builds an SSL context whenever verify is set, even for http.
                verify=self._verify if self._scheme == "https" else False,
            )
            if self._token is not None:
                self._client.token = self._token
        return self._client

    async def _call(
        self,
        what: str,
        request: Callable[[consul.aio.Consul], Awaitable[T]],
        *,
        timeout: float | None = None,
    ) -> T:
        client = self._connect()
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                return await request(client)
        except Exception as exc:
            raise _translate(f"consul {self._host}:{self._port}: {what}", exc) from exc


# --------------------------------------------------------------------------- helpers


def _translate(where: str, exc: BaseException) -> StoreError:
    """The one place py-consul / aiohttp errors become store errors."""
    if isinstance(exc, (TimeoutError, OSError, aiohttp.ClientError, consul.Timeout)):
        return StoreUnavailable(f"{where}: {exc or type(exc).__name__}")
    text = str(exc)
    if type(exc) is consul.ConsulException and text[:1] == "5":  # a 5xx answer
        return StoreUnavailable(f"{where}: {text}")
    return StoreError(f"{where}: {text or type(exc).__name__}")


def _duration(seconds: float) -> str:
    """A Go duration string, as Consul wants it."""
    return f"{max(1, round(seconds * 1000))}ms"


def _instance(entry: Mapping[str, Any]) -> Instance:
    node = entry.get("Node") or {}
    svc = entry.get("Service") or {}
    service_id = svc.get("ID", "")
    checks = [c for c in entry.get("Checks") or () if c.get("ServiceID") in ("", None, service_id)]
    status = CheckStatus.worst(c.get("Status", "critical") for c in checks)
    own = [c for c in checks if c.get("ServiceID") == service_id]
    failing = [c for c in checks if c.get("Status") != CheckStatus.PASSING]
    reason = (failing or own or [{}])[0].get("Output", "")
    return Instance(
        id=service_id,
        name=svc.get("Service", ""),
        node=node.get("Node", ""),
        address=svc.get("Address") or node.get("Address", ""),
        port=int(svc.get("Port") or 0),
        tags=tuple(svc.get("Tags") or ()),
        meta=MappingProxyType(dict(svc.get("Meta") or {})),
        status=status,
        output=str(reason or "").strip(),
    )


__all__ = [
    "COORDINATOR_SERVICE",
    "DATANODE_SERVICE",
    "CheckStatus",
    "ConsulCatalog",
    "HttpCheck",
    "Instance",
    "Registration",
    "ServiceHealth",
    "coordinator_registration",
    "datanode_registration",
]
