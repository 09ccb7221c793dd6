"""End to end over real sockets: the daemon as a process, webhooks posted, SQLite queried."""

from __future__ import annotations

import copy
import signal
import sqlite3
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.conftest import CC_PASSWORD, CC_USER, CSV_PASSWORD, CSV_USER, Daemon, basic

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures"
CC_URL = "/webhooks/connectedcars"
CSV_URL = "/webhooks/carstatsviewer/car1"


def cc_bulk_of_all_fixtures() -> bytes:
    """Every Connected Cars example of the seed in one bulk, as the vendor's bytes."""
    elements: list[Any] = []
    for path in sorted((FIXTURES / "connectedcars").glob("*.json")):
        from fleetstream.normalize.base import loads_lenient

        elements.extend(loads_lenient(path.read_bytes()))
    # Several seed examples share (vehicleId, id, time) but differ in type; identity keeps them.
    return orjson.dumps(elements)


async def post(
    daemon: Daemon, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}{path}", data=body, headers=headers) as response,
    ):
        payload = await response.read()
        parsed = orjson.loads(payload) if payload else {}
        return response.status, parsed, dict(response.headers)


async def test_connectedcars_bulk_is_stored_once(make_daemon: Callable[..., Daemon]) -> None:
    """Every seed example posted as one bulk is stored; the same bulk again adds nothing."""
    daemon = make_daemon()
    body = cc_bulk_of_all_fixtures()
    count = len(orjson.loads(body))

    status, answer, _ = await post(daemon, CC_URL, body, basic(CC_USER, CC_PASSWORD))
    assert (200, count, count) == (status, answer["events"], answer["written"])
    stored = daemon.query("SELECT count(*) FROM events WHERE vendor = 'connectedcars'")[0][0]
    assert count == stored

    status, answer, _ = await post(daemon, CC_URL, body, basic(CC_USER, CC_PASSWORD))
    assert (200, 0, count) == (status, answer["written"], answer["duplicates"])
    assert [(count,)] == daemon.query("SELECT count(*) FROM events")


async def test_signals_and_registry_tables(make_daemon: Callable[..., Daemon]) -> None:
    """A posted bulk lands as VSS signals, latest state, vehicles and access state."""
    daemon = make_daemon()
    bulk = [
        {
            "type": "can_odometer_km",
            "id": 1,
            "value": 94636,
            "vehicleId": 7,
            "time": "2024-03-01T10:00:00Z",
        },
        {
            "type": "can_odometer_km",
            "id": 2,
            "value": 94000,
            "vehicleId": "7",
            "time": "2024-02-01T10:00:00Z",
        },
        {
            "type": "access_granted_to_vehicle",
            "id": 3,
            "vehicleId": 7,
            "time": "2024-01-01T00:00:00Z",
        },
    ]
    status, _, _ = await post(daemon, CC_URL, orjson.dumps(bulk), basic(CC_USER, CC_PASSWORD))

    assert 200 == status
    latest = daemon.query(
        "SELECT vehicle_key, path, value, observed_at FROM latest_signals"
        " WHERE path = 'Vehicle.TraveledDistance'"
    )
    assert [
        (
            "connectedcars::7",
            "Vehicle.TraveledDistance",
            "94636000.0",
            "2024-03-01T10:00:00.000000Z",
        )
    ] == latest
    vehicles = daemon.query("SELECT vehicle_key, vehicle_id, access_state FROM vehicles")
    assert [("connectedcars::7", "7", "granted")] == vehicles


async def test_carstatsviewer_charging_session_replaced(
    make_daemon: Callable[..., Daemon],
) -> None:
    """A merged, re-sent charging session replaces the stored one; an identical one is dropped."""
    daemon = make_daemon()
    body = orjson.loads((FIXTURES / "carstatsviewer" / "chargingSessions_2_1.json").read_bytes())
    auth = basic(CSV_USER, CSV_PASSWORD)

    status, first, _ = await post(daemon, CSV_URL, orjson.dumps(body), auth)
    status_again, again, _ = await post(daemon, CSV_URL, orjson.dumps(body), auth)
    merged = copy.deepcopy(body)
    session = merged["chargingSessions"][0]
    session["end_epoch_time"] += 600_000
    session["charged_energy"] = 2000.0
    status_merged, _, _ = await post(daemon, CSV_URL, orjson.dumps(merged), auth)

    assert (200, 200, 200) == (status, status_again, status_merged)
    assert first["written"] == again["duplicates"]
    sessions = daemon.query(
        "SELECT vehicle_key, session_id, charged_energy_kwh FROM charging_sessions"
    )
    assert [("carstatsviewer::car1", "9", 2.0)] == sessions
    entity_rows = daemon.query("SELECT count(*) FROM events WHERE type = 'charging_session'")
    assert [(1,)] == entity_rows


async def test_wrong_password_is_401_and_stores_nothing(
    make_daemon: Callable[..., Daemon],
) -> None:
    """Bad or missing credentials get 401 and nothing reaches the database."""
    daemon = make_daemon()
    body = cc_bulk_of_all_fixtures()

    wrong, _, headers = await post(daemon, CC_URL, body, basic(CC_USER, "not-the-password"))
    missing, _, _ = await post(daemon, CC_URL, body, {})
    other_route, _, _ = await post(daemon, CC_URL, body, basic(CSV_USER, CSV_PASSWORD))

    assert (401, 401, 401) == (wrong, missing, other_route)
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert [(0,)] == daemon.query("SELECT count(*) FROM events")
    assert [(0,)] == daemon.query("SELECT count(*) FROM quarantine")


async def test_garbage_is_400_and_quarantined(make_daemon: Callable[..., Daemon]) -> None:
    """An unparseable body gets 400 and its exact bytes are kept in quarantine."""
    daemon = make_daemon()
    garbage = b"\x00\xffnot json at all"

    status, answer, _ = await post(daemon, CC_URL, garbage, basic(CC_USER, CC_PASSWORD))

    assert (400, "invalid_json", True) == (status, answer["error"], answer["quarantined"])
    rows = daemon.query("SELECT source, decoder, reason, raw FROM quarantine")
    assert [("connectedcars", "connectedcars-json", "invalid_json", garbage)] == rows


async def test_bad_element_quarantined_rest_stored(make_daemon: Callable[..., Daemon]) -> None:
    """One broken element of a bulk is quarantined alone; the others are stored and 200 is sent."""
    daemon = make_daemon()
    bulk = [
        {
            "type": "car_ignition",
            "id": 1,
            "value": True,
            "vehicleId": 1,
            "time": "2024-01-01T00:00:00Z",
        },
        {"type": "car_ignition", "id": 2, "value": True, "vehicleId": 1},
        {
            "type": "car_ignition",
            "id": 3,
            "value": False,
            "vehicleId": 1,
            "time": "2024-01-01T00:01:00Z",
        },
    ]

    auth = basic(CC_USER, CC_PASSWORD)
    status, answer, _ = await post(daemon, CC_URL, orjson.dumps(bulk), auth)

    assert (200, 2, 1) == (status, answer["written"], answer["quarantined"])
    assert [(2,)] == daemon.query("SELECT count(*) FROM events")
    quarantined = daemon.query("SELECT reason, raw FROM quarantine")
    assert 1 == len(quarantined)
    assert bulk[1] == orjson.loads(quarantined[0][1])


async def test_oversized_body_is_413(make_daemon: Callable[..., Daemon]) -> None:
    """A body above http.max_body_bytes is refused with 413 before it is decoded."""

    def small_limit(config: dict[str, Any]) -> None:
        config["http"]["max_body_bytes"] = 1024

    daemon = make_daemon(small_limit)
    status, answer, _ = await post(
        daemon, CC_URL, b"[" + b" " * 4096 + b"]", basic(CC_USER, CC_PASSWORD)
    )

    assert (413, 1024) == (status, answer["max_body_bytes"])


async def test_sink_failure_is_503_then_nothing_lost(make_daemon: Callable[..., Daemon]) -> None:
    """While the database is locked the webhook answers 503 + Retry-After and /readyz fails;
    after the lock is gone the re-sent bulk is stored completely."""

    def fast_failure(config: dict[str, Any]) -> None:
        config["sinks"][0]["busy_timeout_secs"] = 0.1
        config["pipeline"]["write_retry"] = {"attempts": 2, "backoff_initial_secs": 0.05}

    daemon = make_daemon(fast_failure)
    body = cc_bulk_of_all_fixtures()
    count = len(orjson.loads(body))
    blocker = sqlite3.connect(daemon.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        status, _, headers = await post(daemon, CC_URL, body, basic(CC_USER, CC_PASSWORD))
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/readyz") as r:
            ready_status = r.status
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (503, "5", 503) == (status, headers.get("Retry-After"), ready_status)

    status, answer, _ = await post(daemon, CC_URL, body, basic(CC_USER, CC_PASSWORD))

    assert (200, count) == (status, answer["written"])
    assert [(count,)] == daemon.query("SELECT count(*) FROM events")


async def test_metrics_and_health_endpoints(make_daemon: Callable[..., Daemon]) -> None:
    """/healthz, /readyz and /metrics answer; the metrics count what happened."""
    daemon = make_daemon()
    await post(daemon, CC_URL, cc_bulk_of_all_fixtures(), basic(CC_USER, CC_PASSWORD))
    await post(daemon, CC_URL, b"nope", basic(CC_USER, CC_PASSWORD))

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/healthz") as r:
            health = r.status
        async with session.get(f"{daemon.url}/readyz") as r:
            ready = r.status
        async with session.get(f"{daemon.url}/metrics") as r:
            metrics = await r.text()

    assert (200, 200) == (health, ready)
    expected_lines = {
        'fleetstream_messages_received_total{source="connectedcars"} 2.0',
        'fleetstream_quarantined_total{reason="invalid_json",source="connectedcars"} 1.0',
        'fleetstream_http_responses_total{code="400",source="connectedcars"} 1.0',
        'fleetstream_http_responses_total{code="200",source="connectedcars"} 1.0',
    }
    assert expected_lines == expected_lines & set(metrics.splitlines())
    assert 'fleetstream_last_message_age_seconds{source="carstatsviewer-car1"}' in metrics


async def test_sigterm_drains_and_exits_zero(make_daemon: Callable[..., Daemon]) -> None:
    """SIGTERM stops the daemon with exit code 0 and a shutdown log line with the counts."""
    daemon = make_daemon()
    await post(daemon, CC_URL, cc_bulk_of_all_fixtures(), basic(CC_USER, CC_PASSWORD))

    daemon.signal(signal.SIGTERM)
    code = daemon.wait()

    assert 0 == code
    stopped = [orjson.loads(line) for line in daemon.log_events() if "fleetstream_stopped" in line]
    assert 1 == len(stopped)
    assert (True, 1) == (stopped[0]["drained"], stopped[0]["messages"])


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_direct_https_with_configured_certificate(
    make_daemon: Callable[..., Daemon], self_signed_cert: tuple[Path, Path]
) -> None:
    """With `http.tls` set the listener speaks HTTPS with that certificate and stores bulks."""
    cert, key = self_signed_cert

    def with_tls(config: dict[str, Any]) -> None:
        config["http"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}

    daemon = make_daemon(with_tls, start=False)
    daemon.scheme = "https"
    daemon.ssl_context = ssl.create_default_context(cafile=str(cert))
    daemon.start()
    body = cc_bulk_of_all_fixtures()

    connector = aiohttp.TCPConnector(ssl=daemon.ssl_context)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{daemon.url}{CC_URL}", data=body, headers=basic(CC_USER, CC_PASSWORD)
        ) as response,
    ):
        status = response.status

    assert (200, [(len(orjson.loads(body)),)]) == (
        status,
        daemon.query("SELECT count(*) FROM events"),
    )


async def test_full_history_upload_is_stored(make_daemon: Callable[..., Daemon]) -> None:
    """A large Car Stats Viewer history upload (6,000 driving points, over 256 KiB so it is
    decoded off the event loop) is stored completely; posting it again adds nothing."""
    daemon = make_daemon()
    points = [
        {
            "alt": 12.5,
            "distance_delta": 100.0,
            "driving_point_epoch_time": 1696070487231 + i * 10_000,
            "energy_delta": 15.5,
            "lat": 52.0 + i / 100_000,
            "lon": 13.0,
            "state_of_charge": 0.8,
        }
        for i in range(6000)
    ]
    body = orjson.dumps({"apiVersion": "2.1", "appVersion": "0.25.2", "drivingPoints": points})
    auth = basic(CSV_USER, CSV_PASSWORD)

    status, answer, _ = await post(daemon, CSV_URL, body, auth)
    again, repeat, _ = await post(daemon, CSV_URL, body, auth)

    assert len(body) > 256 * 1024
    assert (200, 6000, 200, 6000) == (status, answer["written"], again, repeat["duplicates"])
    assert [(6000,)] == daemon.query("SELECT count(*) FROM events WHERE type = 'driving_point'")


async def test_sighup_reloads_log_level_and_keeps_running(
    make_daemon: Callable[..., Daemon],
) -> None:
    """SIGHUP re-reads the log settings: the daemon keeps serving and starts writing debug lines
    after the file switched to `debug`; SIGTERM still stops it with 0."""
    import yaml

    daemon = make_daemon()
    auth = basic(CC_USER, CC_PASSWORD)
    await post(daemon, CC_URL, cc_bulk_of_all_fixtures(), auth)
    debug_before = [line for line in daemon.log_events() if '"level": "debug"' in line]

    config = yaml.safe_load(daemon.config_path.read_text())
    config["log"]["level"] = "debug"
    daemon.config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    await wait_for_log(daemon, "config_reloaded")
    fresh = [
        {
            "type": "car_ignition",
            "id": 1,
            "value": True,
            "vehicleId": 9,
            "time": "2024-06-01T00:00:00Z",
        }
    ]
    status, _, _ = await post(daemon, CC_URL, orjson.dumps(fresh), auth)
    debug_after = [line for line in daemon.log_events() if '"level": "debug"' in line]
    daemon.signal(signal.SIGTERM)

    assert ([], 200, 0) == (debug_before, status, daemon.wait())
    assert any('"batch_written"' in line for line in debug_after)


async def wait_for_log(daemon: Daemon, event: str, timeout_secs: float = 10) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if any(f'"{event}"' in line for line in daemon.log_events()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} log line within {timeout_secs}s")


async def test_daemon_with_postgres_sink_and_redis_dedupe(
    make_daemon: Callable[..., Daemon],
) -> None:
    """The daemon runs on the shared-store setup: a bulk lands in PostgreSQL once, and the
    repeat is dropped by the Redis dedupe store (and would be by the table's key)."""
    import os
    import uuid

    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    dsn = os.environ.get(
        "FLEETSTREAM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    redis_url = os.environ.get("FLEETSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    schema = f"fs_e2e_{uuid.uuid4().hex[:8]}"

    def shared_stores(config: dict[str, Any]) -> None:
        config["sinks"] = [{"type": "postgres", "name": "shared", "dsn": dsn, "db_schema": schema}]
        config["dedupe"] = {"type": "redis", "url": redis_url, "key_prefix": f"{schema}:"}

    daemon = make_daemon(shared_stores)
    body = cc_bulk_of_all_fixtures()
    count = len(orjson.loads(body))
    auth = basic(CC_USER, CC_PASSWORD)
    first, written, _ = await post(daemon, CC_URL, body, auth)
    again, repeat, _ = await post(daemon, CC_URL, body, auth)
    daemon.signal(signal.SIGTERM)
    code = daemon.wait()

    connection = await asyncpg.connect(dsn)
    try:
        stored = await connection.fetchval(f"SELECT count(*) FROM {schema}.events")
    finally:
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        await connection.close()
    assert (200, count, 200, count, 0) == (
        first,
        written["written"],
        again,
        repeat["duplicates"],
        code,
    )
    assert count == stored
