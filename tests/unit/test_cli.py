"""Unit tests for the `fleetstream` command line: decode and validate."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from fleetstream.cli import main
from fleetstream.normalize.model import RawMessage
from fleetstream.normalize.registry import get_decoder

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CC_GPS = FIXTURES / "connectedcars" / "gps_position.json"
CC_DTC = FIXTURES / "connectedcars" / "can_dtc.json"
CSV_SESSIONS = FIXTURES / "carstatsviewer" / "chargingSessions_2_1.json"
EXAMPLE = ROOT / "config" / "example.yaml"
DECODE_KEYS = [
    "event_id",
    "vendor",
    "type",
    "kind",
    "vehicle",
    "occurred_at",
    "signals",
    "attributes",
]
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
EXAMPLE_VARIABLES = [
    "FLEETSTREAM_PORT",
    "FLEETSTREAM_DATA_DIR",
    "CC_ORGANIZATION_KEY",
    "CC_WEBHOOK_USER",
    "CC_WEBHOOK_PASSWORD",
    "CSV_CAR1_USER",
    "CSV_CAR1_PASSWORD",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def expected_lines(
    decoder: str, path: Path, metadata: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """What `decode` should print: the decoder's events, projected onto the public keys."""
    raw = RawMessage(path.read_bytes(), "cli", datetime.now(UTC), metadata or {})
    events = get_decoder(decoder)(raw).events
    return [{k: e.to_dict()[k] for k in DECODE_KEYS} for e in events]


def shape(lines: list[dict[str, Any]]) -> list[tuple[list[str], bool]]:
    """Per line: its keys in order, and whether occurred_at is RFC 3339 UTC."""
    return [(list(line), bool(RFC3339_UTC.match(line["occurred_at"]))) for line in lines]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate` reads os.environ: drop the example's variables so its defaults apply."""
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# decode --------------------------------------------------------------------------------------


def test_decode_connectedcars_prints_decoder_events(capsys: pytest.CaptureFixture[str]) -> None:
    """`decode` prints each decoded event as one JSON line with the public keys only."""
    code, out, err = run(capsys, "decode", "--decoder", "connectedcars-json", str(CC_GPS))
    expected = (0, expected_lines("connectedcars-json", CC_GPS), "")
    assert expected == (code, json_lines(out), err)


def test_decode_connectedcars_gps_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The gps_position fixture decodes to its known id, vehicle and time."""
    _, out, _ = run(capsys, "decode", "-d", "connectedcars-json", str(CC_GPS))
    line = json_lines(out)[0]
    expected = (
        "connectedcars::228745:gps_position:157659647:2022-10-12T07:06:45Z",
        "connectedcars",
        "gps_position",
        "signal",
        {"vendor_id": "228745"},
        "2022-10-12T07:06:45Z",
    )
    assert expected == tuple(line[k] for k in DECODE_KEYS[:6])


def test_decode_output_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """Every line has exactly the public keys, in order, and occurred_at in RFC 3339 UTC."""
    _, gps, _ = run(capsys, "decode", "-d", "connectedcars-json", str(CC_GPS))
    _, dtc, _ = run(capsys, "decode", "-d", "connectedcars-json", str(CC_DTC))
    _, sessions, _ = run(
        capsys, "decode", "-d", "carstatsviewer", "--vehicle", "car1", str(CSV_SESSIONS)
    )
    lines = json_lines(gps) + json_lines(dtc) + json_lines(sessions)
    expected = [(DECODE_KEYS, True)] * 4
    assert expected == shape(lines)


def test_decode_organization_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`--organization` reaches the decoder as transport metadata."""
    code, out, _ = run(
        capsys, "decode", "-d", "connectedcars-json", "--organization", "org1", str(CC_GPS)
    )
    expected = (0, expected_lines("connectedcars-json", CC_GPS, {"organization": "org1"}))
    assert expected == (code, json_lines(out))


def test_decode_carstatsviewer_with_vehicle(capsys: pytest.CaptureFixture[str]) -> None:
    """`--vehicle` names the Car Stats Viewer vehicle and every event carries it."""
    code, out, err = run(
        capsys, "decode", "--decoder", "carstatsviewer", "--vehicle", "car1", str(CSV_SESSIONS)
    )
    lines = json_lines(out)
    expected = (
        0,
        expected_lines("carstatsviewer", CSV_SESSIONS, {"vehicle": "car1"}),
        "",
        [{"vendor_id": "car1"}] * 2,
    )
    assert expected == (code, lines, err, [line["vehicle"] for line in lines])


def test_decode_carstatsviewer_without_vehicle_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without `--vehicle` Car Stats Viewer input fails with one stderr line, no traceback."""
    code, out, err = run(capsys, "decode", "--decoder", "carstatsviewer", str(CSV_SESSIONS))
    err_lines = err.splitlines()
    expected = (2, "", 1, True)
    assert expected == (
        code,
        out,
        len(err_lines),
        err_lines[0].startswith("fleetstream: cannot decode: missing_vehicle: "),
    )


def test_decode_garbage_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Input that is not JSON fails with one clear stderr line."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 this is not json")
    code, out, err = run(capsys, "decode", "--decoder", "connectedcars-json", str(garbage))
    err_lines = err.splitlines()
    expected = (2, "", 1, True)
    assert expected == (
        code,
        out,
        len(err_lines),
        err_lines[0].startswith("fleetstream: cannot decode: invalid_json: body is not valid JSON"),
    )


def test_decode_unknown_decoder_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown decoder name fails and lists the known decoders."""
    code, out, err = run(capsys, "decode", "--decoder", "nope", str(CC_GPS))
    expected = (
        2,
        "",
        "fleetstream: unknown decoder 'nope'; known decoders: carstatsviewer,"
        " connectedcars-json, invers, mobito\n",
    )
    assert expected == (code, out, err)


def test_decode_missing_file_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A payload file that does not exist fails with one stderr line naming it."""
    missing = tmp_path / "absent.json"
    code, out, err = run(capsys, "decode", "-d", "connectedcars-json", str(missing))
    expected = (2, "", f"fleetstream: cannot read {missing}: No such file or directory\n")
    assert expected == (code, out, err)


def test_decode_bad_meta_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """A `--meta` item without `=` fails with a clear message."""
    code, out, err = run(capsys, "decode", "-d", "connectedcars-json", "--meta", "foo", str(CC_GPS))
    expected = (2, "", "fleetstream: --meta expects KEY=VALUE, got 'foo'\n")
    assert expected == (code, out, err)


def test_decode_bad_timestamp_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """A `--timestamp` that is neither RFC 3339 nor epoch ms fails with a clear message."""
    code, out, err = run(
        capsys, "decode", "-d", "connectedcars-json", "--timestamp", "yesterday", str(CC_GPS)
    )
    expected = (
        2,
        "",
        "fleetstream: --timestamp is neither RFC 3339 nor epoch milliseconds: yesterday\n",
    )
    assert expected == (code, out, err)


def test_decode_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a file argument the payload is read from standard input."""
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(CC_GPS.read_bytes())))
    code, out, err = run(capsys, "decode", "--decoder", "connectedcars-json")
    expected = (0, expected_lines("connectedcars-json", CC_GPS), "")
    assert expected == (code, json_lines(out), err)


def test_decode_rejected_element_exits_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk with one bad element prints the good events, reports the bad one, and exits 1."""
    good = {
        "type": "gps_position",
        "id": 1,
        "vehicleId": 2,
        "time": "2022-10-12T07:06:45Z",
        "latitude": 1.5,
        "longitude": 2.5,
    }
    bad = {"type": "gps_position", "id": "x", "vehicleId": 2, "time": "2022-10-12T07:06:45Z"}
    payload = orjson.dumps([good, bad])
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(payload)))
    code, out, err = run(capsys, "decode", "-d", "connectedcars-json")
    err_lines = err.splitlines()
    expected = (1, ["connectedcars::2:gps_position:1:2022-10-12T07:06:45Z"], 1, True)
    assert expected == (
        code,
        [line["event_id"] for line in json_lines(out)],
        len(err_lines),
        err_lines[0].startswith("fleetstream: rejected element: "),
    )


def test_decode_requires_decoder_option(capsys: pytest.CaptureFixture[str]) -> None:
    """Leaving out `--decoder` is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["decode", str(CC_GPS)])
    capsys.readouterr()
    expected = 2
    assert expected == info.value.code


# validate ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_validate_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    """`validate config/example.yaml` succeeds and summarises the config."""
    code, out, err = run(capsys, "validate", str(EXAMPLE))
    expected = (0, f"{EXAMPLE}: ok (2 source(s), 1 sink(s))\n", "")
    assert expected == (code, out, err)


def test_validate_bad_config_names_yaml_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`validate` on an invalid file exits 2 and names the offending YAML path."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sinks: [{type: memory}]\n"
        "sources:\n"
        "  - {type: http, name: a, decoder: connectedcars-json, path: /a, auth: {type: none}}\n"
        "  - {type: http, name: b, decoder: connectedcars-json, path: /b, auth: {type: none},"
        " colour: red}\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "validate", str(bad))
    expected = (
        2,
        "",
        f"fleetstream: {bad}: invalid configuration (1 problem(s))\n"
        "  sources[1].colour: unknown key (check the spelling; docs/configuration.md lists"
        " every key)\n",
    )
    assert expected == (code, out, err)


def test_validate_unknown_decoder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`validate` refuses a source whose decoder does not exist."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sinks: [{type: memory}]\n"
        "sources:\n"
        "  - {type: http, name: a, decoder: kafka-avro, path: /a, auth: {type: none}}\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "validate", str(bad))
    expected = (
        2,
        "",
        f"fleetstream: {bad}: invalid configuration (1 problem(s))\n"
        "  sources[0].decoder: unknown decoder 'kafka-avro'; known: carstatsviewer,"
        " connectedcars-json, invers, mobito\n",
    )
    assert expected == (code, out, err)


def test_validate_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`validate` on a missing file exits 2 with one line naming it."""
    missing = tmp_path / "none.yaml"
    code, out, err = run(capsys, "validate", str(missing))
    expected = (
        2,
        "",
        f"fleetstream: {missing}: cannot read config file: No such file or directory\n",
    )
    assert expected == (code, out, err)


# the installed entry points ------------------------------------------------------------------


def test_module_entry_point_decodes() -> None:
    """`python -m fleetstream decode` runs in a fresh process and prints the events."""
    result = subprocess.run(
        [sys.executable, "-m", "fleetstream", "decode", "-d", "connectedcars-json", str(CC_GPS)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    expected = (0, expected_lines("connectedcars-json", CC_GPS), b"")
    assert expected == (result.returncode, json_lines(result.stdout.decode()), result.stderr)


def test_console_script_fails_cleanly() -> None:
    """The installed `fleetstream` script exits 2 with one stderr line on bad input."""
    script = Path(sys.executable).parent / "fleetstream"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "decode", "-d", "carstatsviewer", str(CSV_SESSIONS)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    err_lines = result.stderr.decode().splitlines()
    expected = (2, b"", 1, True)
    assert expected == (
        result.returncode,
        result.stdout,
        len(err_lines),
        err_lines[0].startswith("fleetstream: cannot decode: missing_vehicle: "),
    )


def test_decode_timestamp_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An epoch timestamp too large for a date is refused with one line, not a traceback."""
    code, out, err = run(
        capsys,
        "decode",
        "--decoder",
        "connectedcars-json",
        "--timestamp",
        "99999999999999999999",
        str(CC_GPS),
    )

    expected = (
        2,
        "",
        "fleetstream: --timestamp is neither RFC 3339 nor epoch milliseconds:"
        " 99999999999999999999\n",
    )
    assert expected == (code, out, err)


def test_run_with_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    """`fleetstream run` on a taken port exits 2 with a last line naming the listener, after
    closing the sinks it had opened (the database is consistent and reopenable)."""
    import socket
    import sqlite3
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "fleetstream.yaml"
        config.write_text(
            "log: {format: json}\n"
            f"http: {{listen_host: 127.0.0.1, listen_port: {port}}}\n"
            f"dedupe: {{type: sqlite, path: {tmp_path / 'dedupe.db'}}}\n"
            f"sinks: [{{type: sqlite, path: {tmp_path / 'events.db'}}}]\n"
            "sources:\n"
            "  - {type: http, name: a, decoder: connectedcars-json, path: /a,"
            " auth: {type: none}}\n",
            encoding="utf-8",
        )
        done = subprocess.run(
            [sys.executable, "-m", "fleetstream", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert (2, "") == (done.returncode, done.stdout)
    assert done.stderr.splitlines()[-1].startswith("fleetstream: cannot start http listener: ")
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert [(0,)] == db.execute("SELECT count(*) FROM events").fetchall()
