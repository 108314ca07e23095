"""EtcdStore over TLS, against a real etcd that requires client certificates.

A throwaway CA, a server certificate (IP SAN 127.0.0.1) and a client
certificate are made with the ``openssl`` command line (the module is skipped
when it is missing); etcd serves https with ``--client-cert-auth`` on free
loopback ports. Its ``/health`` then needs the client certificate too, so
readiness is checked with a store request, retried until a deadline.

Also here: the TLS settings of EtcdStore, the sidecar and the coordinator.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.config import ConfigError as CoordinatorConfigError
from coordinator.config import load_config as load_coordinator_config
from dcs.errors import StoreError, StoreUnavailable
from dcs.etcd import EtcdStore
from dcs.port import WatchBatch
from sidecar.config import ConfigError as SidecarConfigError
from sidecar.config import load_config as load_sidecar_config
from sidecar.config import parse_args as sidecar_args
from tests.support import LOOPBACK, ManagedProcess, async_wait_until, free_port, require_binary

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, check=True, capture_output=True,
                   timeout=60)  # fmt: skip


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", key, "-out", cert,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    return cert, key


def _make_leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    cert, key, csr, extfile = (d / f"{name}.pem", d / f"{name}-key.pem", d / f"{name}.csr",
                               d / f"{name}.ext")  # fmt: skip
    extfile.write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", f"/CN={name}",
             "-keyout", key, "-out", csr, cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", extfile, "-out", cert, cwd=d)  # fmt: skip
    return cert, key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(d, "ca")
    other = _make_ca(d, "other-ca")
    server = _make_leaf(d, "server", ca,
                        f"subjectAltName=IP:{LOOPBACK}\nextendedKeyUsage=serverAuth\n"
                        "keyUsage=critical,digitalSignature,keyEncipherment\n")  # fmt: skip
    client = _make_leaf(d, "client", ca,
                        "extendedKeyUsage=clientAuth\n"
                        "keyUsage=critical,digitalSignature,keyEncipherment\n")  # fmt: skip
    return Pki(ca[0], server[0], server[1], client[0], client[1], other[0])


# --------------------------------------------------------------------------- etcd over https


@dataclass(frozen=True)
class TlsEtcd:
    process: ManagedProcess
    endpoint: str  # "https://127.0.0.1:PORT"
    pki: Pki

    def store(self, **kwargs: object) -> EtcdStore:
        tls = {"ca_cert": str(self.pki.ca), "cert_cert": str(self.pki.client_cert),
               "cert_key": str(self.pki.client_key)}  # fmt: skip
        return EtcdStore(self.endpoint, **{"timeout": 2.0, **tls, **kwargs})  # type: ignore[arg-type]


async def _ready(server: TlsEtcd) -> bool:
    if not server.process.running:
        raise AssertionError(f"etcd exited:\n{server.process.log_tail()}")
    async with server.store(timeout=1.0) as s:
        await s.get("/ready")
    return True


def start_tls_etcd(work: Path, pki: Pki) -> TlsEtcd:
    """etcd on https with --client-cert-auth; the caller stops ``.process``."""
    port, peer_port = free_port(), free_port()
    client_url, peer_url = f"https://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{peer_port}"
    argv = [
        require_binary("etcd"), "--name", "tls", "--data-dir", str(work / "data"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"tls={peer_url}", "--initial-cluster-state", "new",
        "--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key),
        "--trusted-ca-file", str(pki.ca), "--client-cert-auth",
        "--log-level", "warn", "--log-outputs", "stderr", "--unsafe-no-fsync",
    ]  # fmt: skip
    process = ManagedProcess(argv=argv, log_path=work / "etcd.log", cwd=work)
    process.start()
    server = TlsEtcd(process, client_url, pki)
    try:
        asyncio.run(async_wait_until(lambda: _ready(server), timeout=20, interval=0.1,
                                     what=f"etcd at {client_url} to answer over TLS"))  # fmt: skip
    except BaseException:
        process.kill()
        raise
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsEtcd]:
    server = start_tls_etcd(tmp_path_factory.mktemp("etcd-tls"), pki)
    yield server
    server.process.stop()


@pytest.fixture
async def store(tls_etcd: TlsEtcd) -> AsyncIterator[EtcdStore]:
    async with tls_etcd.store() as s:
        yield s


def _root() -> str:
    return f"/tls-{uuid.uuid4().hex[:8]}/"


# --------------------------------------------------------------------------- over TLS


@needs_openssl
async def test_put_get_lease_and_watch_over_tls(store: EtcdStore) -> None:
    assert store.tls
    root = _root()
    rev = await store.put(root + "a", b"1")
    got = await store.get(root + "a")
    assert got is not None and got.value == b"1" and got.mod_revision == rev
    lease = await store.grant(10)
    assert await store.keepalive_once(lease) == 10
    assert await store.create(root + "b", b"2", lease=lease)
    snap = await store.load(root)
    assert {k: kv.value for k, kv in snap.entries.items()} == {root + "a": b"1", root + "b": b"2"}

    seen: list[WatchBatch] = []

    async def collect() -> None:
        async for batch in store.watch(root, rev + 1):
            seen.append(batch)

    task = asyncio.create_task(collect())
    try:
        await async_wait_until(lambda: seen, timeout=5, what="a watch batch over TLS")
        assert seen[0].events[0].key == root + "b"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await store.revoke(lease)


@needs_openssl
async def test_scheme_less_endpoint_with_tls_files(tls_etcd: TlsEtcd) -> None:
    bare = tls_etcd.endpoint.removeprefix("https://")
    async with tls_etcd.store() as s, EtcdStore(
        bare, ca_cert=str(tls_etcd.pki.ca), cert_cert=str(tls_etcd.pki.client_cert),
        cert_key=str(tls_etcd.pki.client_key),
    ) as bare_store:  # fmt: skip
        key = _root() + "k"
        await s.put(key, b"v")
        got = await bare_store.get(key)
        assert got is not None and got.value == b"v"


async def _fails_unavailable_in_time(
    store: EtcdStore, timeout: float, match: str | None = None
) -> None:
    start = time.monotonic()
    async with store:
        with pytest.raises(StoreUnavailable, match=match):
            await store.get("/tls-refused")
    assert time.monotonic() - start < timeout + 1.0


@needs_openssl
async def test_without_the_ca_the_server_is_not_trusted(tls_etcd: TlsEtcd) -> None:
    # No CA: the system roots, which do not know the throwaway CA.
    untrusted = "(?i)handshake|certificate"
    await _fails_unavailable_in_time(tls_etcd.store(ca_cert=None, timeout=1.0), 1.0, untrusted)
    # The wrong CA.
    await _fails_unavailable_in_time(
        tls_etcd.store(ca_cert=str(tls_etcd.pki.other_ca), timeout=1.0), 1.0, untrusted
    )


@needs_openssl
async def test_without_a_client_certificate_etcd_refuses(tls_etcd: TlsEtcd) -> None:
    await _fails_unavailable_in_time(
        tls_etcd.store(cert_cert=None, cert_key=None, timeout=1.0), 1.0
    )


@needs_openssl
async def test_plaintext_against_tls_etcd_fails_in_time(tls_etcd: TlsEtcd) -> None:
    bare = tls_etcd.endpoint.removeprefix("https://")
    await _fails_unavailable_in_time(EtcdStore(bare, timeout=1.0), 1.0)


@needs_openssl
def test_password_authentication_over_tls(pki: Pki, tmp_path: Path) -> None:
    """aetcd's token login runs on the TLS channel too. (etcd takes the client
    certificate's CN as the user when a request has no token: without a password
    this store acts as user "client", who does not exist.)"""
    server = start_tls_etcd(tmp_path, pki)
    tls = [f"--cacert={pki.ca}", f"--cert={pki.client_cert}", f"--key={pki.client_key}"]
    try:
        for args in (["user", "add", "root:secret"], ["auth", "enable"]):
            subprocess.run([require_binary("etcdctl"), f"--endpoints={server.endpoint}", *tls,
                            *args], check=True, capture_output=True, timeout=10)  # fmt: skip

        async def check() -> None:
            async with server.store(username="root", password="secret") as s:
                await s.put("/tls-auth/k", b"v")
                got = await s.get("/tls-auth/k")
                assert got is not None and got.value == b"v"
            async with server.store(username="root", password="wrong") as s:
                with pytest.raises(StoreError) as refused:
                    await s.get("/tls-auth/k")
                assert not isinstance(refused.value, StoreUnavailable)
            async with server.store() as s:
                with pytest.raises(StoreError, match="(?i)permission|user"):
                    await s.get("/tls-auth/k")

        asyncio.run(check())
    finally:
        server.process.stop()


# --------------------------------------------------------------------------- settings


def test_store_tls_settings(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    assert not EtcdStore("127.0.0.1:2379").tls
    assert not EtcdStore("http://127.0.0.1:2379").tls
    assert EtcdStore("https://127.0.0.1:2379").tls  # system roots
    assert EtcdStore("127.0.0.1:2379", tls=True).tls
    assert EtcdStore("127.0.0.1:2379", ca_cert=str(pem)).tls
    for endpoints, kwargs, match in [
        ("http://a:1", {"ca_cert": str(pem)}, "https"),
        ("https://a:1,http://b:2", {}, "mix"),
        ("https://a:1", {"tls": False}, "tls=False"),
        ("a:1", {"ca_cert": str(pem), "tls": False}, "tls=False"),
        ("a:1", {"cert_cert": str(pem)}, "both"),
        ("a:1", {"cert_key": str(pem)}, "both"),
        ("a:1", {"ca_cert": str(tmp_path / "missing.pem")}, "cannot read"),
        ("a:1", {"ca_cert": str(tmp_path)}, "cannot read"),
        ("ftp://a:1", {}, "scheme"),
    ]:
        with pytest.raises(ValueError, match=match):
            EtcdStore(endpoints, **kwargs)  # type: ignore[arg-type]
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    with pytest.raises(ValueError, match="PEM"):
        EtcdStore("a:1", ca_cert=str(not_pem))


def test_sidecar_tls_flags(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for p in (ca, cert, key):
        p.write_text("-----BEGIN X-----\n")
    base = ["--cluster", "c", "--etcd", "https://a:1"]
    cfg = load_sidecar_config(sidecar_args(base), environ={})
    assert cfg.etcd == ("https://a:1",) and not cfg.etcd_cacert
    cfg = load_sidecar_config(
        sidecar_args([*base, "--etcd-cacert", str(ca), "--etcd-cert", str(cert),
                      "--etcd-key", str(key)]), environ={})  # fmt: skip
    assert (cfg.etcd_cacert, cfg.etcd_cert, cfg.etcd_key) == (str(ca), str(cert), str(key))
    env = {"SLOTKEEPER_SIDECAR_ETCD_CACERT": str(ca)}
    assert load_sidecar_config(sidecar_args(base), environ=env).etcd_cacert == str(ca)
    toml = tmp_path / "sidecar.toml"
    toml.write_text(f'[sidecar]\ncluster = "c"\netcd = "a:1"\netcd-cacert = "{ca}"\n')
    from_file = load_sidecar_config(sidecar_args(["--config", str(toml)]), environ={})
    assert from_file.etcd_cacert == str(ca)
    for argv, match in [
        ([*base, "--etcd-cert", str(cert)], "--etcd-key"),
        ([*base, "--etcd-cacert", str(tmp_path / "nope.pem")], "--etcd-cacert"),
        (["--cluster", "c", "--etcd", "http://a:1", "--etcd-cacert", str(ca)], "https"),
        (["--cluster", "c", "--etcd", "http://a:1,https://b:2"], "mix"),
    ]:
        with pytest.raises(SidecarConfigError, match=match):
            load_sidecar_config(sidecar_args(argv), environ={})


def test_coordinator_tls_flags(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for p in (ca, cert, key):
        p.write_text("-----BEGIN X-----\n")
    cfg = load_coordinator_config(
        ["--etcd", "https://a:1", "--etcd-cacert", str(ca), "--etcd-cert", str(cert),
         "--etcd-key", str(key)], environ={})  # fmt: skip
    assert (cfg.etcd_cacert, cfg.etcd_cert, cfg.etcd_key) == (str(ca), str(cert), str(key))
    env = {"SLOTKEEPER_ETCD_CACERT": str(ca), "SLOTKEEPER_ETCD_CERT": str(cert),
           "SLOTKEEPER_ETCD_KEY": str(key)}  # fmt: skip
    cfg = load_coordinator_config([], environ=env)
    assert (cfg.etcd_cacert, cfg.etcd_cert, cfg.etcd_key) == (str(ca), str(cert), str(key))
    toml = tmp_path / "coordinator.toml"
    toml.write_text(f'[coordinator]\netcd-cacert = "{ca}"\n')
    assert load_coordinator_config(["--config", str(toml)], environ={}).etcd_cacert == str(ca)
    assert not load_coordinator_config([], environ={}).etcd_cacert
    for argv, match in [
        (["--etcd-key", str(key)], "--etcd-cert"),
        (["--etcd-cacert", str(tmp_path / "nope.pem")], "--etcd-cacert"),
        (["--etcd", "http://a:1", "--etcd-cacert", str(ca)], "https"),
    ]:
        with pytest.raises(CoordinatorConfigError, match=match):
            load_coordinator_config(argv, environ={})


@needs_openssl
async def test_coordinator_and_sidecar_build_tls_stores(tls_etcd: TlsEtcd, tmp_path: Path) -> None:
    """The processes hand the TLS flags to EtcdStore: a request goes through."""
    from coordinator.main import Service
    from sidecar.supervisor import Sidecar

    pki = tls_etcd.pki
    tls = ["--etcd-cacert", str(pki.ca), "--etcd-cert", str(pki.client_cert),
           "--etcd-key", str(pki.client_key)]  # fmt: skip
    service = Service(load_coordinator_config(
        ["--etcd", tls_etcd.endpoint, "--http-port", str(free_port()), *tls], environ={}))  # fmt: skip
    try:
        assert isinstance(service.store, EtcdStore) and service.store.tls
        await service.store.get("/tls-coordinator")
    finally:
        await service.store.close()
    cfg = load_sidecar_config(sidecar_args(
        ["--cluster", "c", "--etcd", tls_etcd.endpoint, "--dir", str(tmp_path), *tls]),
        environ={})  # fmt: skip
    sidecar = Sidecar(cfg)
    store = sidecar.store
    try:
        assert isinstance(store, EtcdStore) and store.tls
        await store.get("/tls-sidecar")
    finally:
        await store.close()
