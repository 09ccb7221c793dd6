"""The typed configuration. Every model forbids unknown keys, so a typo is an error, not a no-op.

Units are part of field names (`drain_timeout_secs`, `max_body_bytes`). The docstring of each
field is its documentation in the generated configuration reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fleetstream.normalize.registry import DECODERS


def _check_decoder(name: str) -> str:
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}")
    return name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level that is written."""
    format: Literal["auto", "json", "console"] = "auto"
    """`json` lines, human `console` output, or `auto`: console on a terminal, JSON otherwise."""


class TlsConfig(_Model):
    cert_file: Path
    """PEM certificate chain served by the HTTP listener."""
    key_file: Path
    """PEM private key of that certificate."""


class HttpServerConfig(_Model):
    listen_host: str = "0.0.0.0"
    """Address the HTTP listener binds (webhooks, /metrics, /healthz, /readyz)."""
    listen_port: int = Field(8080, ge=0, le=65535)
    """TCP port of the HTTP listener; 0 picks a free port."""
    tls: TlsConfig | None = None
    """Serve HTTPS directly. Leave unset behind a TLS-terminating proxy or ingress."""
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    """Largest accepted request body; larger ones get 413. The default holds a full-history
    Car Stats Viewer upload and the largest Connected Cars bulks with room to spare."""
    retry_after_secs: int = Field(5, ge=1)
    """Value of the Retry-After header sent with 503 answers."""


class BasicAuthConfig(_Model):
    type: Literal["basic"] = "basic"
    username: str = Field(min_length=1)
    """User name the sender must present."""
    password: SecretStr = Field(min_length=1)
    """Password the sender must present. Use `${ENV_VAR}` or `${file:/run/secrets/x}` rather
    than writing it in the file."""


class NoAuthConfig(_Model):
    type: Literal["none"]
    """Accept unauthenticated requests (only for a listener that is not reachable from outside)."""


AuthConfig = Annotated[BasicAuthConfig | NoAuthConfig, Field(discriminator="type")]


class HttpSourceConfig(_Model):
    """A webhook route on the shared HTTP listener, bound to one decoder."""

    type: Literal["http"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Source name used in logs, metrics and stored events."""
    decoder: str
    """Decoder for the request bodies: `connectedcars-json` or `carstatsviewer`."""
    path: str = Field(pattern=r"^/[A-Za-z0-9_./-]*$")
    """URL path of the route, e.g. `/webhooks/connectedcars`."""
    auth: AuthConfig
    """How senders authenticate: `basic` (compared in constant time) or `none`."""
    vehicle: str | None = None
    """Vehicle the route belongs to. Required for `carstatsviewer`, whose payload names none."""
    organization: str | None = None
    """Connected Cars organization key of the senders, part of the event identity when the
    payload does not carry one."""
    max_in_flight_messages: int | None = Field(None, gt=0)
    """Requests of this route being processed at once before new ones get 503; defaults to
    `pipeline.max_in_flight_messages`."""

    @field_validator("decoder")
    @classmethod
    def _known_decoder(cls, name: str) -> str:
        return _check_decoder(name)

    @model_validator(mode="after")
    def _vehicle_for_csv(self) -> HttpSourceConfig:
        if self.decoder == "carstatsviewer" and not self.vehicle:
            raise ValueError("a carstatsviewer route needs `vehicle`: its payload names no vehicle")
        return self


class KafkaTlsConfig(_Model):
    ca_file: Path | None = None
    """PEM CA bundle that signs the brokers' certificates (default: the system store)."""
    cert_file: Path | None = None
    """PEM client certificate, for brokers that require mutual TLS."""
    key_file: Path | None = None
    """PEM private key of the client certificate."""
    key_password: SecretStr | None = None
    """Password of an encrypted client key."""
    verify_hostname: bool = True
    """Check that the broker certificate names the host connected to."""


KAFKA_MANAGED_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "sasl.password",
    }
)
"""librdkafka properties fleetstream sets itself; `extra_properties` may not override them,
because the delivery guarantee depends on them (offsets are stored and committed explicitly)."""


def _check_kafka_client(
    config: KafkaSourceConfig | KafkaSinkConfig, managed_properties: frozenset[str]
) -> None:
    """Security settings of a Kafka client agree with each other, and `extra_properties` stays
    off what fleetstream manages."""
    if config.security_protocol.startswith("SASL_"):
        missing = [
            key
            for key in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(config, key) is None
        ]
        if missing:
            raise ValueError(
                f"security_protocol {config.security_protocol} needs {', '.join(missing)}"
            )
    elif config.sasl_mechanism or config.sasl_username or config.sasl_password:
        raise ValueError("sasl_* settings need security_protocol SASL_PLAINTEXT or SASL_SSL")
    managed = sorted(managed_properties & set(config.extra_properties))
    if managed:
        raise ValueError(
            f"extra_properties may not set {', '.join(managed)}: fleetstream manages them"
        )


class KafkaSourceConfig(_Model):
    """A Kafka consumer in a consumer group, committing offsets only past settled messages."""

    type: Literal["kafka"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Source name used in logs, metrics and stored events."""
    decoder: str
    """Decoder for the record values, e.g. `mobito`."""
    bootstrap_servers: list[str] = Field(min_length=1)
    """Brokers to bootstrap from, as `host:port`."""
    topics: list[str] = Field(min_length=1)
    """Topics to consume."""
    group_id: str = Field(min_length=1)
    """Consumer group; replicas with the same group split the partitions."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How to talk to the brokers. MOBITO's push API needs `SASL_SSL`."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism for the `SASL_*` protocols."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; use `${ENV_VAR}` or `${file:...}`."""
    tls: KafkaTlsConfig = KafkaTlsConfig()
    """TLS settings for the `SSL` and `SASL_SSL` protocols."""
    start_position: Literal["earliest", "latest"] = "earliest"
    """Where a group without committed offsets starts reading."""
    session_timeout_secs: float = Field(45.0, gt=0)
    """Broker-side liveness timeout of a group member."""
    heartbeat_interval_secs: float = Field(3.0, gt=0)
    """How often the member heartbeats; well below `session_timeout_secs`."""
    max_poll_interval_secs: float = Field(300.0, gt=0)
    """Longest allowed gap between polls before the member leaves the group. fleetstream keeps
    polling (with partitions paused) while the pipeline is full, so slow sinks never hit it."""
    commit_interval_secs: float = Field(1.0, gt=0)
    """How often settled offsets are committed (also on revocation and shutdown)."""
    poll_timeout_secs: float = Field(0.25, gt=0)
    """Longest wait of one poll for records."""
    poll_batch_max: int = Field(500, gt=0)
    """Most records fetched by one poll."""
    max_in_flight_messages: int | None = Field(None, gt=0)
    """Records admitted and not yet settled before the partitions are paused; defaults to
    `pipeline.max_in_flight_messages`."""
    extra_properties: dict[str, str | int | float | bool] = {}
    """Further librdkafka properties, passed through as they are (e.g. `client.id`,
    `fetch.max.bytes`). The properties fleetstream manages itself are refused."""

    @field_validator("decoder")
    @classmethod
    def _known_decoder(cls, name: str) -> str:
        return _check_decoder(name)

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSourceConfig:
        _check_kafka_client(self, KAFKA_MANAGED_PROPERTIES)
        return self


class AmqpTlsConfig(_Model):
    enabled: bool = False
    """Connect with TLS (`amqps`). INVERS OneAPI requires it."""
    ca_file: Path | None = None
    """PEM CA bundle that signs the broker certificate (default: the system store)."""
    cert_file: Path | None = None
    """PEM client certificate, for brokers that require mutual TLS."""
    key_file: Path | None = None
    """PEM private key of the client certificate."""
    verify_hostname: bool = True
    """Check that the broker certificate names the host connected to."""


class AmqpSourceConfig(_Model):
    """An AMQP 0-9-1 consumer of one or more queues, acknowledging only settled messages."""

    type: Literal["amqp"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Source name used in logs, metrics and stored events."""
    decoder: str
    """Decoder for the message bodies, e.g. `invers`."""
    host: str = "localhost"
    """Broker host name."""
    port: int | None = Field(None, ge=1, le=65535)
    """Broker port; default 5672, or 5671 with TLS."""
    vhost: str = "/"
    """Virtual host (INVERS uses one per customer)."""
    username: str = "guest"
    """User name."""
    password: SecretStr = SecretStr("guest")
    """Password; use `${ENV_VAR}` or `${file:...}`."""
    tls: AmqpTlsConfig = AmqpTlsConfig()
    """TLS settings."""
    queues: list[str] = Field(min_length=1)
    """Queues to consume (INVERS creates one per subscribed topic)."""
    declare_queues: bool = False
    """Declare the queues as durable if they are missing. Off for INVERS, whose queues exist;
    a missing queue is then an error reported by readiness and retried."""
    prefetch: int = Field(100, gt=0)
    """Unacknowledged messages the broker may send per queue; bounds in-flight work."""
    types: list[str] | None = None
    """Only these AMQP `type` properties are processed; other messages are acknowledged and
    counted as filtered, without parsing their bodies. Unset: every message is processed."""
    consumer_tag_prefix: str = "fleetstream"
    """Consumer tags are `<prefix>-<source>-<queue>`, visible in the broker's management UI."""
    connect_timeout_secs: float = Field(10.0, gt=0)
    """Timeout of one connection attempt."""
    heartbeat_secs: int = Field(30, ge=0)
    """AMQP heartbeat interval asked of the broker (0 disables; not recommended)."""
    reconnect_initial_secs: float = Field(1.0, gt=0)
    """Wait before the first reconnection attempt; doubles up to `reconnect_max_secs`."""
    reconnect_max_secs: float = Field(30.0, gt=0)
    """Longest wait between reconnection attempts."""
    requeue_delay_secs: float = Field(1.0, ge=0)
    """Wait before handing a message the sinks could not commit back to the broker, so an
    outage does not turn into a tight redelivery loop."""
    idle_alarm_secs: float = Field(6 * 3600.0, gt=0)
    """A queue that has had no consumer, or no message, for this long makes the daemon not
    ready and logs a warning. INVERS deletes a queue nobody consumed for three days."""

    @field_validator("decoder")
    @classmethod
    def _known_decoder(cls, name: str) -> str:
        return _check_decoder(name)

    @property
    def max_in_flight_messages(self) -> int:
        """The broker's prefetch bounds what is in flight: one prefetch window per queue."""
        return self.prefetch * len(self.queues)


SourceConfig = Annotated[
    HttpSourceConfig | KafkaSourceConfig | AmqpSourceConfig, Field(discriminator="type")
]


class SqliteSinkConfig(_Model):
    type: Literal["sqlite"]
    name: str = Field("sqlite", min_length=1)
    """Sink name used in logs and metrics."""
    path: Path = Path("var/fleetstream.db")
    """Database file; its directory is created if missing."""
    busy_timeout_secs: float = Field(5.0, ge=0)
    """How long a write waits for a lock held by another connection before the batch fails
    (and is retried, then refused with 503 / redelivered)."""


class MemorySinkConfig(_Model):
    """Keeps events in process memory. For tests and `fleetstream decode`-style experiments."""

    type: Literal["memory"]
    name: str = Field("memory", min_length=1)
    """Sink name used in logs and metrics."""


class PostgresSinkConfig(_Model):
    """PostgreSQL (or TimescaleDB), shared by replicas. Tables as in the SQLite sink, created
    and migrated by fleetstream; each batch is one COPY into staging tables and one merge."""

    type: Literal["postgres"]
    name: str = Field("postgres", min_length=1)
    """Sink name used in logs and metrics."""
    dsn: SecretStr
    """Connection string, `postgresql://user:password@host:5432/database`."""
    db_schema: str = Field("fleetstream", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema holding fleetstream's tables; created if missing."""
    pool_max_size: int = Field(4, ge=1)
    """Connections kept open at most."""
    command_timeout_secs: float = Field(30.0, gt=0)
    """A batch that takes longer fails (and is retried, then refused or redelivered)."""
    signals_table: bool = False
    """Also write one narrow row per signal (vehicle, VSS path, time, value) to `signals`."""
    timescaledb: bool = True
    """Make `events` (and `signals`) hypertables when the TimescaleDB extension is installed;
    without the extension plain tables are used either way."""


class JsonlSinkConfig(_Model):
    """Appends events as JSON lines to size-rotated files, fsynced before a batch is settled.
    A log, not a table: a redelivered batch is appended again, so readers dedupe by `event_id`
    (and `version` for entity events)."""

    type: Literal["jsonl"]
    name: str = Field("jsonl", min_length=1)
    """Sink name used in logs and metrics."""
    directory: Path
    """Directory of the files; created if missing. Files are named
    `<file_prefix>-<UTC time YYYYmmddTHHMMSSffffff>.jsonl`."""
    file_prefix: str = Field("events", pattern=r"^[A-Za-z0-9_.-]+$")
    """First part of the file names."""
    max_file_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """A new file is started when a batch would take the current one past this size. A batch is
    never split across files, so a single batch larger than this gets a file of its own."""
    include_quarantine: bool = False
    """Also append quarantine records (raw bytes as base64) to `<file_prefix>-quarantine.jsonl`,
    which is not rotated. Off: this sink ignores them."""


KAFKA_PRODUCER_MANAGED_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)
"""librdkafka properties the Kafka sink sets itself; `extra_properties` may not override them:
the delivery guarantee rests on the idempotent producer waiting for all in-sync replicas."""


class KafkaSinkConfig(_Model):
    """Publishes every event as JSON to a Kafka topic, keyed by vehicle, with an idempotent
    producer; a batch is settled only once the brokers confirmed every record. A batch that
    failed part-way is published again in full, so the topic can hold a record more than
    once: consumers dedupe by the `event_id` header."""

    type: Literal["kafka"]
    name: str = Field("kafka", min_length=1)
    """Sink name used in logs and metrics."""
    bootstrap_servers: list[str] = Field(min_length=1)
    """Brokers to bootstrap from, as `host:port`."""
    topic: str = Field(min_length=1)
    """Topic the events are published to. Records are keyed by the vehicle key, so the events of
    one vehicle stay in order within a partition."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How to talk to the brokers."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism for the `SASL_*` protocols."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; use `${ENV_VAR}` or `${file:...}`."""
    tls: KafkaTlsConfig = KafkaTlsConfig()
    """TLS settings for the `SSL` and `SASL_SSL` protocols."""
    delivery_timeout_secs: float = Field(30.0, gt=0)
    """Longest wait for the brokers to confirm a batch; past it the write fails (and is retried,
    then refused or redelivered)."""
    include_quarantine_topic: str | None = Field(None, min_length=1)
    """Also publish quarantine records (raw bytes as base64) to this topic, keyed by their
    digest. Unset: this sink ignores them."""
    extra_properties: dict[str, str | int | float | bool] = {}
    """Further librdkafka producer properties, passed through as they are (e.g. `client.id`,
    `compression.type`, `linger.ms`). The properties fleetstream manages itself are refused."""

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSinkConfig:
        _check_kafka_client(self, KAFKA_PRODUCER_MANAGED_PROPERTIES)
        return self


SinkConfig = Annotated[
    SqliteSinkConfig | MemorySinkConfig | PostgresSinkConfig | JsonlSinkConfig | KafkaSinkConfig,
    Field(discriminator="type"),
]


class MemoryDedupeConfig(_Model):
    type: Literal["memory"]
    window_secs: float = Field(3600.0, gt=0)
    """An id is remembered this long after it was written."""
    max_keys: int = Field(1_000_000, gt=0)
    """At most this many ids are kept; the oldest are forgotten first."""


class SqliteDedupeConfig(_Model):
    type: Literal["sqlite"]
    path: Path = Path("var/dedupe.db")
    """Database file of the seen-id store."""
    window_secs: float = Field(7 * 86400.0, gt=0)
    """An id is remembered this long after it was written; older ids are pruned."""


class NoDedupeConfig(_Model):
    """No dedupe store: every event is written, and the sinks' unique keys drop duplicates."""

    type: Literal["none"]


class RedisDedupeConfig(_Model):
    """Seen ids in Redis, shared by replicas: one read and one write round trip per batch."""

    type: Literal["redis"]
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL, `redis://[:password@]host:6379/db` (`rediss://` for TLS)."""
    key_prefix: str = "fleetstream:seen:"
    """Prefix of the keys holding seen ids."""
    window_secs: float = Field(7 * 86400.0, gt=0)
    """An id is remembered this long (the keys' TTL)."""


class PostgresDedupeConfig(_Model):
    """Seen ids in PostgreSQL, shared by replicas."""

    type: Literal["postgres"]
    dsn: SecretStr
    """Connection string, `postgresql://user:password@host:5432/database`."""
    db_schema: str = Field("fleetstream", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema holding the `seen` table; created if missing."""
    window_secs: float = Field(7 * 86400.0, gt=0)
    """An id is remembered this long after it was written; older ids are pruned."""


DedupeConfig = Annotated[
    MemoryDedupeConfig
    | SqliteDedupeConfig
    | NoDedupeConfig
    | RedisDedupeConfig
    | PostgresDedupeConfig,
    Field(discriminator="type"),
]


class WriteRetryConfig(_Model):
    attempts: int = Field(3, ge=1)
    """Attempts to write a batch before its messages are refused (HTTP 503) or redelivered."""
    backoff_initial_secs: float = Field(0.2, ge=0)
    """Wait before the second attempt; doubles each time."""
    backoff_max_secs: float = Field(5.0, ge=0)
    """Upper bound of the wait between attempts."""


class PipelineConfig(_Model):
    batch_max_events: int = Field(1000, gt=0)
    """A batch is written once it holds this many events (a single message is never split)."""
    batch_linger_secs: float = Field(0.05, ge=0)
    """A batch is written at the latest this long after its first message arrived."""
    max_in_flight_messages: int = Field(256, gt=0)
    """Messages per source admitted but not yet settled; beyond it the source is held back."""
    drain_timeout_secs: float = Field(30.0, gt=0)
    """On SIGTERM, how long in-flight work may take to be written and settled before exit."""
    write_retry: WriteRetryConfig = WriteRetryConfig()
    """Retry policy for failed batch writes."""


class FleetstreamConfig(_Model):
    """The root of a fleetstream YAML file."""

    log: LogConfig = LogConfig()
    """Log level and format."""
    http: HttpServerConfig = HttpServerConfig()
    """The HTTP listener shared by webhooks, metrics and health endpoints."""
    pipeline: PipelineConfig = PipelineConfig()
    """Batching, backpressure, retries and shutdown."""
    dedupe: DedupeConfig = SqliteDedupeConfig(type="sqlite")
    """Where seen event ids are kept: `sqlite` (default, persistent, one node), `memory`,
    `redis` or `postgres` (shared by replicas), or `none`."""
    sinks: list[SinkConfig] = Field(min_length=1)
    """Stores every event is written to; an event is settled only when all of them committed."""
    sources: list[SourceConfig] = Field(min_length=1)
    """Where events come from."""

    @model_validator(mode="after")
    def _unique_names(self) -> FleetstreamConfig:
        for kind, names in (
            ("source", [s.name for s in self.sources]),
            ("sink", [s.name for s in self.sinks]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        paths = [s.path for s in self.sources if isinstance(s, HttpSourceConfig)]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"http source paths must be unique; repeated: {', '.join(dupes)}")
        return self
