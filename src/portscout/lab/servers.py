"""Real servers (Debian's nginx, OpenSSH, Redis, ...) started for -sV tests and benchmarks.

Each server runs from a config written into a fresh directory, on 127.0.0.1 at its usual
port, in the foreground as a child of the caller, and is stopped (SIGTERM, then SIGKILL)
when the ``running`` context ends. Starts are kept to a second or two: no fsync, no
persistence, the smallest bootstrap each server accepts.

Network safety: ``running`` refuses to start anything unless the calling process is in a
private network namespace with no route out (``netns.check_isolated``): Debian's own
service starts are never used, and a daemon started here can reach nothing but loopback.

Imports only the standard library (and ``netns``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portscout.lab.netns import check_isolated

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for a server to accept connections (mariadb's bootstrap)
STOP_TIMEOUT = 5.0


class ServerError(RuntimeError):
    """A server could not be prepared or did not start; carries its log's tail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """How to run one prepared server: argv, as which user, and the ports it opens."""

    argv: list[str]
    ports: tuple[int, ...]
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """A server portscout can start: its Debian package (whose version the tools should
    report), the binaries it needs, and a function writing its config into a directory."""

    name: str
    package: str
    binaries: tuple[str, ...]
    prepare: Callable[[Path], Launch]

    def missing(self) -> list[str]:
        """The needed binaries that are not installed (``make test`` installs them)."""
        return [b for b in self.binaries if _which(b) is None]


def _which(binary: str) -> str | None:
    if binary.startswith("/"):
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(argv: list[str], *, user: str | None = None, timeout: float = 60.0) -> None:
    """A preparation step (key, certificate, data directory); its output only on failure."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, user=user, check=False
    )
    if done.returncode != 0:
        raise ServerError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def _postgres_bin(tool: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))
    return str(found[-1]) if found else f"/usr/lib/postgresql/missing/bin/{tool}"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway RSA certificate for ``localhost`` (openssl req), for HTTPS tests."""
    key, cert = directory / "tls.key", directory / "tls.crt"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
          "-subj", "/CN=localhost/O=portscout test", "-addext", "subjectAltName=DNS:localhost",
          "-keyout", str(key), "-out", str(cert)])  # fmt: skip
    return key, cert


def _nginx(d: Path) -> Launch:
    key, cert = self_signed_certificate(d)
    (d / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {HOST}:80;
        listen {HOST}:443 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "portscout test\\n"; }}
    }}
}}
"""
    )
    return Launch(argv=["nginx", "-c", str(d / "nginx.conf"), "-g", "daemon off;"], ports=(80, 443))


def _sshd(d: Path) -> Launch:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    (d / "sshd_config").write_text(
        f"Port 22\nListenAddress {HOST}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        "UsePAM no\nPasswordAuthentication no\n"
    )
    return Launch(argv=[_which("sshd") or "sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                  ports=(22,))  # fmt: skip


def _redis(d: Path) -> Launch:
    argv = ["redis-server", "--port", "6379", "--bind", HOST, "--save", "", "--appendonly",
            "no", "--dir", str(d), "--daemonize", "no"]  # fmt: skip
    return Launch(argv=argv, ports=(6379,))


def _memcached(d: Path) -> Launch:
    return Launch(argv=["memcached", "-p", "11211", "-l", HOST, "-U", "0", "-u", "nobody"],
                  ports=(11211,))  # fmt: skip


def _postgres(d: Path) -> Launch:
    """initdb into ``d`` as the postgres user (the server refuses root), fsync off."""
    data = d / "pgdata"
    shutil.chown(d, "postgres")
    _run([_postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
          "--no-sync", "--no-instructions"], user="postgres")  # fmt: skip
    argv = [_postgres_bin("postgres"), "-D", str(data), "-p", "5432", "-k", str(d),
            "-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "shared_buffers=16MB",
            "-c", "logging_collector=off"]  # fmt: skip
    return Launch(argv=argv, ports=(5432,), user="postgres")


def _mariadb(d: Path) -> Launch:
    """mariadb-install-db into ``d`` (about 2 s), then the server as root on it."""
    data = d / "data"
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
          "--auth-root-authentication-method=normal", "--skip-test-db",
          "--skip-name-resolve"], timeout=120)  # fmt: skip
    argv = [_which("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={data}",
            "--user=root", f"--socket={d}/mysqld.sock", f"--pid-file={d}/mysqld.pid",
            f"--bind-address={HOST}", "--port=3306", "--skip-log-bin", "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0",
            f"--log-error={d}/error.log"]  # fmt: skip
    return Launch(argv=argv, ports=(3306,))


def _vsftpd(d: Path) -> Launch:
    empty = d / "empty"
    empty.mkdir(mode=0o555)
    (d / "vsftpd.conf").write_text(
        f"listen=YES\nlisten_ipv6=NO\nlisten_address={HOST}\nlisten_port=21\nbackground=NO\n"
        f"anonymous_enable=YES\nanon_root={empty}\nftp_username=nobody\nlocal_enable=NO\n"
        f"secure_chroot_dir={empty}\n"
        f"xferlog_enable=NO\nvsftpd_log_file={d}/vsftpd.log\n"
    )
    return Launch(argv=[_which("vsftpd") or "vsftpd", str(d / "vsftpd.conf")], ports=(21,))


def _exim(d: Path) -> Launch:
    """A config that only receives (no router can deliver): the daemon, no queue runner."""
    for sub in ("spool", "log"):
        (d / sub).mkdir()
    (d / "exim.conf").write_text(
        f"primary_hostname = portscout.test\ndaemon_smtp_ports = 25\nlocal_interfaces = {HOST}\n"
        f"spool_directory = {d}/spool\nlog_file_path = {d}/log/%slog\n"
        f"exim_user = root\nexim_group = root\nnever_users =\nhost_lookup =\n"
        "rfc1413_hosts =\nacl_smtp_rcpt = acl_check_rcpt\n"
        "begin acl\nacl_check_rcpt:\n  deny\n"
    )
    return Launch(argv=[_which("exim4") or "exim4", "-C", str(d / "exim.conf"), "-bdf",
                        "-oX", "25"], ports=(25,))  # fmt: skip


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server(name="nginx", package="nginx-common", binaries=("nginx", "openssl"),
               prepare=_nginx),
        Server(name="openssh", package="openssh-server", binaries=("sshd", "ssh-keygen"),
               prepare=_sshd),
        Server(name="redis", package="redis-server", binaries=("redis-server",), prepare=_redis),
        Server(name="memcached", package="memcached", binaries=("memcached",),
               prepare=_memcached),
        Server(name="postgresql", package="postgresql-15",
               binaries=(_postgres_bin("initdb"), _postgres_bin("postgres")),
               prepare=_postgres),
        Server(name="mariadb", package="mariadb-server",
               binaries=("mariadb-install-db", "mariadbd"), prepare=_mariadb),
        Server(name="vsftpd", package="vsftpd", binaries=("vsftpd",), prepare=_vsftpd),
        Server(name="exim", package="exim4-daemon-light", binaries=("exim4",), prepare=_exim),
    )
}  # fmt: skip


def package_version(package: str) -> str:
    """The installed Debian version of ``package`` (``dpkg-query``), e.g. ``1:9.2p1-2``."""
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if done.returncode != 0 or not done.stdout:
        raise ServerError(f"package {package} is not installed")
    return done.stdout


def upstream_version(debian_version: str) -> str:
    """The upstream part of a Debian version: no epoch, no revision (``1:9.2p1-2`` ->
    ``9.2p1``; Debian policy 5.6.12)."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@dataclass(slots=True)
class _Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _start(server: Server, directory: Path) -> tuple[_Running, Launch]:
    directory.mkdir(parents=True)
    launch = server.prepare(directory)
    busy = [p for p in launch.ports if _accepts(p)]
    if busy:
        raise ServerError(f"{server.name}: port {busy[0]} is already in use")
    log = directory / "output.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            launch.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            user=launch.user, cwd=directory, start_new_session=True,
            env={**os.environ, **launch.env},
        )  # fmt: skip
    return _Running(server.name, process, log), launch


def _wait_ready(running: _Running, ports: tuple[int, ...], deadline: float) -> None:
    while not all(_accepts(p) for p in ports):
        if running.process.poll() is not None or time.monotonic() > deadline:
            tail = running.log.read_text(errors="replace")[-800:]
            state = "exited" if running.process.poll() is not None else "timed out"
            raise ServerError(f"{running.name} {state} before accepting: {tail}")
        time.sleep(0.05)


def _stop(running: _Running) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``STOP_TIMEOUT``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.process.pid, signal.SIGTERM)
    try:
        running.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def running(
    names: list[str], *, timeout: float = START_TIMEOUT
) -> Iterator[dict[str, tuple[int, ...]]]:
    """Start the named servers (configs in a fresh directory under /tmp, removed after),
    yield name -> ports once every one accepts connections, stop them all on exit.
    Raises ``ServerError`` (after stopping those already started) when one is missing or
    fails to start; ``NamespaceError`` outside a private namespace."""
    check_isolated()
    root = Path(tempfile.mkdtemp(prefix="portscout-servers-"))
    os.chmod(root, 0o755)  # the postgres user must reach its directory
    started: list[_Running] = []
    try:
        pending = []
        for name in names:
            server = SERVERS[name]
            if missing := server.missing():
                raise ServerError(f"{name}: not installed ({', '.join(missing)})")
            run, launch = _start(server, root / name)
            started.append(run)
            pending.append((run, launch))
        deadline = time.monotonic() + timeout
        for run, launch in pending:
            _wait_ready(run, launch.ports, deadline)
        yield {run.name: launch.ports for run, launch in pending}
    finally:
        for run in reversed(started):
            _stop(run)
        shutil.rmtree(root, ignore_errors=True)
