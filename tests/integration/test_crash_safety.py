"""Crash safety: kill the daemon with SIGKILL while bulks are posted and count what arrived."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from tests.integration.conftest import CC_PASSWORD, CC_USER, Daemon, basic

pytestmark = pytest.mark.integration

CC_URL = "/webhooks/connectedcars"
BULKS = 400
EVENTS_PER_BULK = 50
CLIENTS = 8


def bulk(number: int) -> bytes:
    """Bulk `number`: odometer events whose counter `id` encodes bulk and position."""
    return orjson.dumps(
        [
            {
                "type": "can_odometer_km",
                "id": number * 1000 + i,
                "value": 10_000 + i,
                "vehicleId": 100 + i % 5,
                "time": f"2024-01-01T00:00:{i % 60:02d}Z",
            }
            for i in range(EVENTS_PER_BULK)
        ]
    )


def stored_bulk_sizes(daemon: Daemon) -> dict[int, int]:
    rows = daemon.query("SELECT event_id FROM events")
    sizes: dict[int, int] = {}
    for (event_id,) in rows:
        counter = int(event_id.split(":")[4])
        sizes[counter // 1000] = sizes.get(counter // 1000, 0) + 1
    return sizes


async def post_until_killed(daemon: Daemon, kill_after_acks: int) -> tuple[set[int], set[int]]:
    """Post every bulk from several clients; SIGKILL the daemon once enough were acknowledged.

    Returns the bulks answered 200 and the bulks whose request failed or got another answer.
    """
    acked: set[int] = set()
    failed: set[int] = set()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(BULKS):
        queue.put_nowait(number)
    killed = asyncio.Event()
    headers = basic(CC_USER, CC_PASSWORD)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            number = queue.get_nowait()
            try:
                async with session.post(
                    f"{daemon.url}{CC_URL}", data=bulk(number), headers=headers
                ) as response:
                    await response.read()
                    (acked if response.status == 200 else failed).add(number)
            except aiohttp.ClientError:
                failed.add(number)
            if len(acked) >= kill_after_acks and not killed.is_set():
                killed.set()
                daemon.signal(signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    assert killed.is_set(), "the daemon was never killed: raise BULKS"
    return acked, failed


async def test_sigkill_loses_no_acknowledged_bulk(make_daemon: Callable[..., Daemon]) -> None:
    """Every bulk answered 200 before a SIGKILL is complete in SQLite after a restart, and
    re-sending the unacknowledged ones (as the vendor does) completes the data with no copies."""
    daemon = make_daemon()

    acked, failed = await post_until_killed(daemon, kill_after_acks=60)
    daemon.wait()
    daemon.start()

    sizes = stored_bulk_sizes(daemon)
    incomplete = sorted(n for n in acked if sizes.get(n, 0) != EVENTS_PER_BULK)
    assert [] == incomplete
    assert failed, "the kill interrupted no request: the test proved nothing"

    headers = basic(CC_USER, CC_PASSWORD)
    async with aiohttp.ClientSession() as session:
        for number in sorted(set(range(BULKS)) - acked):
            async with session.post(
                f"{daemon.url}{CC_URL}", data=bulk(number), headers=headers
            ) as response:
                assert 200 == response.status

    expected = {n: EVENTS_PER_BULK for n in range(BULKS)}
    assert expected == stored_bulk_sizes(daemon)
    assert [(BULKS * EVENTS_PER_BULK,)] == daemon.query("SELECT count(*) FROM events")


async def test_sigterm_under_load_answers_in_flight_and_exits_zero(
    make_daemon: Callable[..., Daemon],
) -> None:
    """SIGTERM while clients post: every request that got 200 is stored, the rest were refused
    or cut off, and the process exits 0 within the drain timeout."""
    daemon = make_daemon()
    acked: set[int] = set()
    headers = basic(CC_USER, CC_PASSWORD)
    enough = asyncio.Event()

    async def client(session: aiohttp.ClientSession, numbers: range) -> None:
        for number in numbers:
            try:
                async with session.post(
                    f"{daemon.url}{CC_URL}", data=bulk(number), headers=headers
                ) as response:
                    if response.status == 200:
                        acked.add(number)
                        if len(acked) >= 40:
                            enough.set()
            except aiohttp.ClientError:
                return

    async def terminate_after_enough() -> None:
        await enough.wait()
        daemon.signal(signal.SIGTERM)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(
            terminate_after_enough(),
            *(client(session, range(i, BULKS, CLIENTS)) for i in range(CLIENTS)),
        )
    code = daemon.wait()

    assert 0 == code
    assert 0 < len(acked) < BULKS
    sizes = stored_bulk_sizes(daemon)
    assert [] == sorted(n for n in acked if sizes.get(n, 0) != EVENTS_PER_BULK)
