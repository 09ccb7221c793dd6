"""Internal events: what they count."""

from __future__ import annotations

import pytest

from fleetstream.telemetry.metrics import MAX_UNKNOWN_TYPE_LABELS, Telemetry


def test_unknown_type_labels_are_bounded() -> None:
    """Past MAX_UNKNOWN_TYPE_LABELS distinct types per source, new types share `other`."""
    telemetry = Telemetry()
    for i in range(MAX_UNKNOWN_TYPE_LABELS + 5):
        telemetry.unknown_event_type("cc", f"type_{i}")
    telemetry.unknown_event_type("cc", "type_0")

    samples = {
        sample.labels["type"]: sample.value
        for metric in telemetry.registry.collect()
        if metric.name == "fleetstream_unknown_event_types"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }

    assert (MAX_UNKNOWN_TYPE_LABELS + 1, 5.0, 2.0) == (
        len(samples),
        samples["other"],
        samples["type_0"],
    )


def test_last_message_age_counts_from_last_message() -> None:
    """The age gauge is measured from the last message of the source."""
    telemetry = Telemetry()
    telemetry.register_source("cc")
    telemetry.message_received("cc", 10)

    assert 0 <= telemetry.message_age("cc") < 60
    assert telemetry.message_age("cc") < telemetry.message_age("never")


def test_unknown_type_is_logged_once_per_type(capsys: pytest.CaptureFixture[str]) -> None:
    """A new unknown type is logged the first time it is seen per source, not per event."""
    telemetry = Telemetry()
    for _ in range(3):
        telemetry.unknown_event_type("cc", "brand_new")
    telemetry.unknown_event_type("cc", "other_new")

    logged = [line for line in capsys.readouterr().out.splitlines() if "unknown_event_type" in line]
    assert 2 == len(logged)
