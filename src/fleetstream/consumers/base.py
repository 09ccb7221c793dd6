"""The contract of a broker source.

A source owns one broker connection. It reads messages, hands each to its `SourceHandle`
(`submit`), and settles the message with the broker (ack, offset commit, checkpoint) only when
the returned future succeeds; when it fails, the message must be delivered again. Webhook
routes are served by `consumers.http.HttpServer` and are not `Source` objects.
"""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and begin reading."""

    async def stop_intake(self) -> None:
        """Stop reading new messages; admitted ones keep settling."""

    async def close(self) -> None:
        """Settle with the broker what was settled in the pipeline, and disconnect. Called
        after the pipeline drained."""

    def problems(self) -> dict[str, str]:
        """Reasons the source is not ready; empty when it is."""

    def failure(self) -> str | None:
        """Why the source stopped working for good (the daemon should be restarted), if it did."""
