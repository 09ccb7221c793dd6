"""Load a YAML config: interpolate `${...}` references, validate, and explain errors by YAML path.

Interpolation applies inside every string scalar:
- `${NAME}`: the environment variable; an error if it is unset.
- `${NAME:-default}`: the variable, or `default` when it is unset or empty.
- `${file:/path/to/secret}`: the file's content without trailing line breaks (Kubernetes and
  systemd credentials are mounted as files).
- `$${` stands for a literal `${`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fleetstream.config.model import FleetstreamConfig
from fleetstream.errors import ConfigError

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> FleetstreamConfig:
    """Read, interpolate and validate the file at `path`. Raises `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, origin=str(path), environ=environ)


def parse_config(
    text: str, origin: str = "<config>", environ: Mapping[str, str] | None = None
) -> FleetstreamConfig:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping")
    resolved = _interpolate(document, (), os.environ if environ is None else environ, origin)
    try:
        return FleetstreamConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, resolved, origin)) from None


def _interpolate(
    node: Any, where: tuple[str | int, ...], environ: Mapping[str, str], origin: str
) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, (*where, str(k)), environ, origin) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*where, i), environ, origin) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        return _REFERENCE.sub(lambda m: _resolve(m, where, environ, origin), node)
    return node


def _resolve(
    match: re.Match[str], where: tuple[str | int, ...], environ: Mapping[str, str], origin: str
) -> str:
    if match.group(0) == "$${":
        return "${"
    expression = match.group(1)
    location = f"{origin}: {yaml_path(where)}"
    if expression.startswith("file:"):
        secret_path = Path(expression[len("file:") :])
        try:
            return secret_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{location}: cannot read secret file {secret_path}: {exc.strerror}"
            ) from None
    name, has_default, default = expression.partition(":-")
    if not _ENV_NAME.match(name):
        raise ConfigError(f"{location}: invalid reference ${{{expression}}}")
    value = environ.get(name)
    if has_default:
        return value if value else default
    if value is None:
        raise ConfigError(f"{location}: environment variable {name} is not set")
    return value


def yaml_path(where: tuple[str | int, ...]) -> str:
    """Render a location as `sources[1].auth.password`."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<top level>"


def _explain(exc: ValidationError, document: Any, origin: str) -> str:
    lines = [f"{origin}: invalid configuration ({exc.error_count()} problem(s))"]
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        loc = error["loc"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; docs/configuration.md lists every key)"
        elif error["type"] == "union_tag_invalid":
            ctx = error.get("ctx", {})
            message = f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
            loc = (*loc, "type")
        lines.append(f"  {yaml_path(_document_path(loc, document))}: {message}")
    return "\n".join(lines)


def _document_path(loc: tuple[str | int, ...], document: Any) -> tuple[str | int, ...]:
    """Drop the tags pydantic inserts for discriminated unions, which are not YAML keys."""
    path: list[str | int] = []
    node = document
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)
