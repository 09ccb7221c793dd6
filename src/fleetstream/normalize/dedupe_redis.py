"""Seen ids in Redis, shared by every replica pointed at the same server.

One key per event id, `key_prefix + dedupe key`, holding `1` with a TTL of the window: Redis
forgets an id by itself, nothing is pruned. `unseen` is one `MGET` over the batch and
`mark_seen` one pipelined round trip of `SET key 1 PX window`, so a batch costs two round trips
whatever its size.

Semantics shared with the PostgreSQL store (see `dedupe_postgres`): a key counts as seen only
once some replica's `mark_seen` stored it, which the pipeline calls after every sink committed
the event. `unseen` therefore only reads; it does not claim keys. A claim would let a second
replica drop a copy of an event that the claiming replica has not stored yet; if that write
then fails, or the replica dies, and the redelivery reaches another replica while the claim
lives, the redelivery is acked unwritten and the event is lost. Declining to claim has a cost:
two replicas that get the same event at the same moment may both write it. The sinks' unique
keys then keep one copy, so the stored data never holds it twice. No replica ever skips an
event that was not stored.

Connection errors and timeouts surface as `redis.exceptions.RedisError`; the pipeline writes
the whole batch when `unseen` fails and only logs a failed `mark_seen`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import redis.asyncio as redis

from fleetstream.config.model import RedisDedupeConfig

CLIENT_NAME: Final = "fleetstream-dedupe"
"""Shown by `CLIENT LIST`, so an operator can tell fleetstream's connections apart."""

SOCKET_TIMEOUT_SECS: Final = 5.0
"""Bounds how long a batch waits on an unresponsive server before it is written undeduped."""


class RedisDedupe:
    def __init__(self, config: RedisDedupeConfig) -> None:
        self._url = config.url.get_secret_value()
        self._prefix = config.key_prefix
        self._ttl_ms = max(1, round(config.window_secs * 1000))
        self._client: redis.Redis | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect and check the server answers, so a wrong URL or password stops startup."""
        self._check_open()
        client = redis.Redis.from_url(
            self._url,
            client_name=CLIENT_NAME,
            socket_timeout=SOCKET_TIMEOUT_SECS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECS,
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        client = self._connected()
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        values = await client.mget([self._prefix + key for key in unique])
        return {key for key, value in zip(unique, values, strict=True) if value is None}

    async def mark_seen(self, keys: Sequence[str]) -> None:
        client = self._connected()
        unique = list(dict.fromkeys(keys))
        if not unique:
            return
        async with client.pipeline(transaction=False) as pipe:
            for key in unique:
                pipe.set(self._prefix + key, b"1", px=self._ttl_ms)
            await pipe.execute()

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the Redis dedupe store is closed")

    def _connected(self) -> redis.Redis:
        self._check_open()
        if self._client is None:
            raise RuntimeError("the Redis dedupe store is not started")
        return self._client
