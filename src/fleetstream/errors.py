"""The error taxonomy, by what the runtime does with each error.

- `DecodeError`: the input is bad. Quarantine the raw bytes, settle the message, carry on.
- `RetryableSinkError`: a store is unavailable. Hold the work back, retry, and if it still
  fails, refuse (HTTP 503) or redeliver (broker nack) so nothing is lost.
- `PipelineFull`: backpressure. The source must wait or refuse new work for now.
- `ConfigError`: the operator's configuration is wrong. Exit non-zero with a clear message.
- `FatalError`: anything the daemon cannot continue after. Exit non-zero.
"""

from __future__ import annotations


class FleetstreamError(Exception):
    """Base class of every error fleetstream raises on purpose."""


class DecodeError(FleetstreamError):
    """A payload that a decoder cannot turn into events.

    `reason` is a short stable label used as a metric label and in the quarantine table
    (`invalid_json`, `not_an_array`, `missing_field`, `unsupported_version`, ...); the message
    says what exactly is wrong, for a human.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class RetryableSinkError(FleetstreamError):
    """A sink or dedupe store could not commit a batch; trying again later may succeed."""


class PipelineFull(FleetstreamError):
    """The pipeline holds as much in-flight work as the source is allowed; retry later."""


class PipelineClosed(FleetstreamError):
    """The pipeline is draining for shutdown and takes no new work."""


class ConfigError(FleetstreamError):
    """The configuration is invalid. The message names the YAML path and the problem."""


class FatalError(FleetstreamError):
    """The daemon cannot go on; it exits non-zero."""
