"""Unit tests for the YAML config loader: interpolation, validation and error paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetstream.config.loader import load_config, parse_config
from fleetstream.config.model import (
    BasicAuthConfig,
    FleetstreamConfig,
    HttpServerConfig,
    HttpSourceConfig,
    LogConfig,
    MemorySinkConfig,
    NoAuthConfig,
    PipelineConfig,
    SqliteDedupeConfig,
    SqliteSinkConfig,
)
from fleetstream.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


def config_text(password: str = "secret", extra_source: str = "", source_extra: str = "") -> str:
    """A minimal valid config with one http source whose password is `password` (raw YAML)."""
    return (
        "sinks:\n"
        "  - type: memory\n"
        "sources:\n"
        "  - type: http\n"
        "    name: cc\n"
        "    decoder: connectedcars-json\n"
        "    path: /cc\n"
        f"{source_extra}"
        "    auth:\n"
        "      type: basic\n"
        "      username: user\n"
        f"      password: {password}\n"
        f"{extra_source}"
    )


def password_of(config: FleetstreamConfig) -> str:
    auth = config.sources[0].auth
    assert isinstance(auth, BasicAuthConfig)
    return auth.password.get_secret_value()


def config_error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="test.yaml", environ={} if environ is None else environ)
    return str(info.value)


def test_env_variable_is_substituted() -> None:
    """`${VAR}` takes the value of the variable from the given environment."""
    config = parse_config(config_text("${PW}"), environ={"PW": "hunter2"})
    expected = "hunter2"
    assert expected == password_of(config)


def test_env_variable_inside_a_longer_string() -> None:
    """A reference may sit inside other text, and several may share one string."""
    config = parse_config(config_text("pre-${A}-${B}-post"), environ={"A": "x", "B": "y"})
    expected = "pre-x-y-post"
    assert expected == password_of(config)


def test_default_applies_when_variable_is_unset() -> None:
    """`${VAR:-default}` gives the default when the variable is not set."""
    config = parse_config(config_text("${PW:-fallback}"), environ={})
    expected = "fallback"
    assert expected == password_of(config)


def test_default_applies_when_variable_is_empty() -> None:
    """`${VAR:-default}` gives the default when the variable is set but empty."""
    config = parse_config(config_text("${PW:-fallback}"), environ={"PW": ""})
    expected = "fallback"
    assert expected == password_of(config)


def test_default_is_ignored_when_variable_is_set() -> None:
    """`${VAR:-default}` gives the variable's value when it is set and not empty."""
    config = parse_config(config_text("${PW:-fallback}"), environ={"PW": "real"})
    expected = "real"
    assert expected == password_of(config)


def test_empty_default_gives_empty_string() -> None:
    """`${VAR:-}` with the variable unset yields an empty string (as example.yaml relies on)."""
    config = parse_config(config_text(source_extra="    organization: ${ORG:-}\n"), environ={})
    expected = ""
    assert expected == config.sources[0].organization


def test_double_dollar_is_a_literal_reference() -> None:
    """`$${` stands for a literal `${` and the rest of the text is not interpolated."""
    config = parse_config(config_text("'a$${PW}b'"), environ={"PW": "no"})
    expected = "a${PW}b"
    assert expected == password_of(config)


def test_substituted_values_are_not_interpolated_again() -> None:
    """A variable whose value looks like a reference is taken literally."""
    config = parse_config(config_text("${PW}"), environ={"PW": "${OTHER}"})
    expected = "${OTHER}"
    assert expected == password_of(config)


def test_file_secret_strips_trailing_newline(tmp_path: Path) -> None:
    """`${file:/path}` reads the file and drops its trailing newline."""
    secret = tmp_path / "password"
    secret.write_text("s3cret value\n", encoding="utf-8")
    config = parse_config(config_text(f"${{file:{secret}}}"), environ={})
    expected = "s3cret value"
    assert expected == password_of(config)


def test_file_secret_keeps_inner_newlines(tmp_path: Path) -> None:
    """Only the trailing newline of a secret file is dropped, not the ones inside it."""
    secret = tmp_path / "password"
    secret.write_text("line1\nline2\r\n", encoding="utf-8")
    config = parse_config(config_text(f"${{file:{secret}}}"), environ={})
    expected = "line1\nline2"
    assert expected == password_of(config)


def test_unset_variable_error_names_yaml_path() -> None:
    """An unset `${VAR}` without default is an error naming the origin, YAML path and variable."""
    message = config_error(config_text("${CC_PASSWORD}"))
    expected = "test.yaml: sources[0].auth.password: environment variable CC_PASSWORD is not set"
    assert expected == message


def test_unset_variable_error_in_second_list_element() -> None:
    """The YAML path of an interpolation error counts list indexes correctly."""
    second = (
        "  - type: http\n"
        "    name: two\n"
        "    decoder: connectedcars-json\n"
        "    path: /two\n"
        "    auth: {type: basic, username: '${TWO_USER}', password: x}\n"
    )
    message = config_error(config_text(extra_source=second))
    expected = "test.yaml: sources[1].auth.username: environment variable TWO_USER is not set"
    assert expected == message


def test_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    """A `${file:...}` reference to a missing file names the path and the OS reason."""
    missing = tmp_path / "absent"
    message = config_error(config_text(f"${{file:{missing}}}"))
    expected = (
        f"test.yaml: sources[0].auth.password: cannot read secret file {missing}: "
        "No such file or directory"
    )
    assert expected == message


def test_secret_path_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    """A `${file:...}` reference to a directory is refused with the OS reason."""
    message = config_error(config_text(f"${{file:{tmp_path}}}"))
    expected = (
        f"test.yaml: sources[0].auth.password: cannot read secret file {tmp_path}: Is a directory"
    )
    assert expected == message


def test_invalid_reference_name_is_an_error() -> None:
    """A reference that is not a variable name is refused rather than passed through."""
    message = config_error(config_text("'${1BAD}'"))
    expected = "test.yaml: sources[0].auth.password: invalid reference ${1BAD}"
    assert expected == message


def test_unknown_key_error_names_its_path() -> None:
    """A misspelt key is refused, naming its YAML path."""
    message = config_error(config_text(source_extra="    colour: red\n"))
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  sources[0].colour: unknown key (check the spelling; docs/configuration.md lists"
        " every key)"
    )
    assert expected == message


def test_unknown_nested_key_error_names_its_path() -> None:
    """An unknown key deep inside a section names the full path."""
    text = config_text() + "pipeline:\n  write_retry:\n    attempt: 3\n"
    message = config_error(text)
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  pipeline.write_retry.attempt: unknown key (check the spelling;"
        " docs/configuration.md lists every key)"
    )
    assert expected == message


def test_unknown_source_type_names_type_path() -> None:
    """An unknown source type is reported at `sources[N].type` with the known types."""
    text = config_text().replace("  - type: http", "  - type: mqtt")
    message = config_error(text)
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  sources[0].type: unknown type 'mqtt'; expected one of 'http', 'kafka', 'amqp'"
    )
    assert expected == message


def test_unknown_sink_type_names_type_path() -> None:
    """An unknown sink type is reported at `sinks[N].type` with the known types."""
    text = config_text().replace("  - type: memory", "  - type: mongodb")
    message = config_error(text)
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  sinks[0].type: unknown type 'mongodb'; expected one of 'sqlite', 'memory', 'postgres',"
        " 'jsonl', 'kafka'"
    )
    assert expected == message


def test_missing_required_field_is_reported() -> None:
    """A source without `path` is refused, naming `sources[0].path`."""
    text = config_text().replace("    path: /cc\n", "")
    message = config_error(text)
    expected = "test.yaml: invalid configuration (1 problem(s))\n  sources[0].path: Field required"
    assert expected == message


def test_missing_sources_is_reported() -> None:
    """A config without `sources` is refused."""
    message = config_error("sinks:\n  - type: memory\n")
    expected = "test.yaml: invalid configuration (1 problem(s))\n  sources: Field required"
    assert expected == message


def test_carstatsviewer_route_needs_vehicle() -> None:
    """A carstatsviewer source without `vehicle` is refused."""
    text = config_text().replace("connectedcars-json", "carstatsviewer")
    message = config_error(text)
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  sources[0]: a carstatsviewer route needs `vehicle`: its payload names"
        " no vehicle"
    )
    assert expected == message


def test_carstatsviewer_route_with_vehicle_is_accepted() -> None:
    """A carstatsviewer source with `vehicle` validates and keeps the vehicle."""
    text = config_text(source_extra="    vehicle: car1\n").replace(
        "connectedcars-json", "carstatsviewer"
    )
    config = parse_config(text, environ={})
    expected = ("carstatsviewer", "car1")
    assert expected == (config.sources[0].decoder, config.sources[0].vehicle)


def test_duplicate_source_names_refused() -> None:
    """Two sources with the same name are refused."""
    other = (
        "  - {type: http, name: cc, decoder: connectedcars-json, path: /b, auth: {type: none}}\n"
    )
    message = config_error(config_text(extra_source=other))
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  <top level>: source names must be unique; repeated: cc"
    )
    assert expected == message


def test_duplicate_source_paths_refused() -> None:
    """Two http sources on the same path are refused."""
    other = (
        "  - {type: http, name: b, decoder: connectedcars-json, path: /cc, auth: {type: none}}\n"
    )
    message = config_error(config_text(extra_source=other))
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  <top level>: http source paths must be unique; repeated: /cc"
    )
    assert expected == message


def test_duplicate_sink_names_refused() -> None:
    """Two sinks with the same name are refused."""
    text = config_text().replace("  - type: memory\n", "  - type: memory\n  - type: memory\n")
    message = config_error(text)
    expected = (
        "test.yaml: invalid configuration (1 problem(s))\n"
        "  <top level>: sink names must be unique; repeated: memory"
    )
    assert expected == message


def test_top_level_list_refused() -> None:
    """A YAML document whose top level is a list is refused."""
    expected = "test.yaml: the top level must be a mapping"
    assert expected == config_error("- a\n- b\n")


def test_empty_document_refused() -> None:
    """An empty document is refused as not being a mapping."""
    expected = "test.yaml: the top level must be a mapping"
    assert expected == config_error("")


def test_invalid_yaml_refused() -> None:
    """Text that is not YAML is refused with a message naming the origin."""
    message = config_error("sources: [\n")
    expected = (
        "test.yaml: not valid YAML: while parsing a flow node\n"
        "expected the node content, but found '<stream end>'\n"
        '  in "<unicode string>", line 2, column 1:\n'
        "    \n"
        "    ^"
    )
    assert expected == message


def test_load_config_missing_file(tmp_path: Path) -> None:
    """`load_config` on a missing file raises `ConfigError` naming the file."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={})
    expected = f"{missing}: cannot read config file: No such file or directory"
    assert expected == str(info.value)


def test_load_config_uses_file_name_as_origin(tmp_path: Path) -> None:
    """Errors from `load_config` start with the path of the file."""
    path = tmp_path / "bad.yaml"
    path.write_text(config_text("${NOPE}"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    expected = f"{path}: sources[0].auth.password: environment variable NOPE is not set"
    assert expected == str(info.value)


def test_example_config_validates_with_defaults() -> None:
    """`config/example.yaml` validates as is, with every `${VAR:-default}` at its default."""
    config = load_config(EXAMPLE, environ={})
    expected = FleetstreamConfig(
        log=LogConfig(level="info", format="auto"),
        http=HttpServerConfig(listen_host="0.0.0.0", listen_port=8080, max_body_bytes=33554432),
        pipeline=PipelineConfig(
            batch_max_events=1000,
            batch_linger_secs=0.05,
            max_in_flight_messages=256,
            drain_timeout_secs=30,
        ),
        dedupe=SqliteDedupeConfig(type="sqlite", path=Path("var/dedupe.db"), window_secs=604800),
        sinks=[SqliteSinkConfig(type="sqlite", name="local", path=Path("var/fleetstream.db"))],
        sources=[
            HttpSourceConfig(
                type="http",
                name="connectedcars",
                decoder="connectedcars-json",
                path="/webhooks/connectedcars",
                organization="",
                auth=BasicAuthConfig(type="basic", username="connectedcars", password="change-me"),
            ),
            HttpSourceConfig(
                type="http",
                name="carstatsviewer-car1",
                decoder="carstatsviewer",
                path="/webhooks/carstatsviewer/car1",
                vehicle="car1",
                auth=BasicAuthConfig(type="basic", username="car1", password="change-me"),
            ),
        ],
    )
    assert expected == config


def test_example_config_takes_environment_overrides() -> None:
    """Variables set in the environment override the example's defaults."""
    config = load_config(
        EXAMPLE,
        environ={
            "FLEETSTREAM_PORT": "9090",
            "FLEETSTREAM_DATA_DIR": "/data",
            "CC_WEBHOOK_PASSWORD": "pw",
        },
    )
    sink, dedupe = config.sinks[0], config.dedupe
    assert isinstance(sink, SqliteSinkConfig)
    assert isinstance(dedupe, SqliteDedupeConfig)
    expected = (9090, Path("/data/dedupe.db"), Path("/data/fleetstream.db"), "pw")
    assert expected == (config.http.listen_port, dedupe.path, sink.path, password_of(config))


def test_no_auth_and_memory_sink_accepted() -> None:
    """A source with `auth: {type: none}` and a memory sink validate into their models."""
    text = (
        "sinks: [{type: memory}]\n"
        "dedupe: {type: none}\n"
        "sources:\n"
        "  - {type: http, name: a, decoder: connectedcars-json, path: /a, auth: {type: none}}\n"
    )
    config = parse_config(text, environ={})
    assert ([MemorySinkConfig(type="memory")], NoAuthConfig(type="none")) == (
        config.sinks,
        config.sources[0].auth,
    )
