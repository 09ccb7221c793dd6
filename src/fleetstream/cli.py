"""The `fleetstream` command: run, validate, decode."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fleetstream.errors import ConfigError, DecodeError, FatalError

_DECODE_KEYS = (
    "event_id",
    "vendor",
    "type",
    "kind",
    "vehicle",
    "occurred_at",
    "signals",
    "signal_times",
    "attributes",
)
"""What `decode` prints per event, in this order; `signal_times` only when the event has any."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleetstream", description="Ingest connected-vehicle events into one canonical store."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", type=Path, required=True, help="YAML config file")

    validate = commands.add_parser("validate", help="check a config file without starting")
    validate.add_argument("config", type=Path)

    decode = commands.add_parser(
        "decode", help="decode one raw payload and print its canonical events as JSON lines"
    )
    decode.add_argument("--decoder", "-d", required=True, help="decoder name")
    decode.add_argument("file", nargs="?", type=Path, help="payload file (default: stdin)")
    decode.add_argument("--vehicle", help="vehicle a Car Stats Viewer route belongs to")
    decode.add_argument("--organization", help="Connected Cars organization key")
    decode.add_argument("--timestamp", help="transport record time, RFC 3339 or epoch milliseconds")
    decode.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other transport metadata (repeatable)",
    )

    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    if args.command == "validate":
        return _validate(args.config)
    return _decode(args)


def _fail(message: str) -> int:
    print(f"fleetstream: {message}", file=sys.stderr)
    return 2


def _validate(path: Path) -> int:
    from fleetstream.config.loader import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        return _fail(str(exc))
    print(f"{path}: ok ({len(config.sources)} source(s), {len(config.sinks)} sink(s))")
    return 0


def _run(path: Path) -> int:
    import structlog

    from fleetstream.app import App
    from fleetstream.config.loader import load_config
    from fleetstream.telemetry.logging import configure_logging

    try:
        config = load_config(path)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log.level, config.log.format)

    def reload_logging() -> None:
        """SIGHUP: apply the file's `log` settings; everything else needs a restart."""
        log = structlog.get_logger("fleetstream")
        try:
            fresh = load_config(path)
        except ConfigError as exc:
            log.warning("config_reload_failed", error=str(exc))
            return
        configure_logging(fresh.log.level, fresh.log.format)
        log.warning(
            "config_reloaded",
            applied="log",
            level=fresh.log.level,
            note="other settings take effect after a restart",
        )

    try:
        asyncio.run(App(config).run_until_signalled(reload_logging))
    except FatalError as exc:
        return _fail(str(exc))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from fleetstream.normalize.model import RawMessage, from_epoch_ms
    from fleetstream.normalize.registry import get_decoder

    try:
        decoder = get_decoder(args.decoder)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    metadata: dict[str, Any] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            return _fail(f"--meta expects KEY=VALUE, got {item!r}")
        metadata[key] = value
    if args.vehicle:
        metadata["vehicle"] = args.vehicle
    if args.organization:
        metadata["organization"] = args.organization
    if args.timestamp:
        try:
            stamp = (
                from_epoch_ms(int(args.timestamp))
                if args.timestamp.isdigit()
                else datetime.fromisoformat(args.timestamp)
            )
        except (ValueError, OverflowError, OSError):
            return _fail(
                f"--timestamp is neither RFC 3339 nor epoch milliseconds: {args.timestamp}"
            )
        metadata["timestamp"] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    try:
        payload = args.file.read_bytes() if args.file else sys.stdin.buffer.read()
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    raw = RawMessage(payload, "cli", datetime.now(UTC), metadata)
    try:
        decoded = decoder(raw)
    except DecodeError as exc:
        return _fail(f"cannot decode: {exc}")
    out = sys.stdout.buffer
    for event in decoded.events:
        full = event.to_dict()
        out.write(orjson.dumps({k: full[k] for k in _DECODE_KEYS if k in full}) + b"\n")
    out.flush()
    for rejected in decoded.rejected:
        print(f"fleetstream: rejected element: {rejected.error}", file=sys.stderr)
    return 1 if decoded.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
