"""Generate docs/configuration.md from the config models: `python -m fleetstream.config.reference`.

The models are the single source of truth; a test fails when the committed file is stale.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fleetstream.config.model import (
    AuthConfig,
    DedupeConfig,
    FleetstreamConfig,
    SinkConfig,
    SourceConfig,
)

_HEADER = """# Configuration reference

Generated from `src/fleetstream/config/model.py` by `python -m fleetstream.config.reference`;
do not edit by hand. Unknown keys are errors. Any string may use `${ENV_VAR}`,
`${ENV_VAR:-default}` or `${file:/path/to/secret}`; `$${` is a literal `${`.
"""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(f"`{a}`" for a in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value!r}`" if value is not None else "`null`"


def _models(root: type[BaseModel], seen: dict[str, type[BaseModel]]) -> None:
    if root.__name__ in seen:
        return
    seen[root.__name__] = root
    for field in root.model_fields.values():
        for model in _nested(field.annotation):
            _models(model, seen)


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _nested(arg)]


def render() -> str:
    seen: dict[str, type[BaseModel]] = {}
    _models(FleetstreamConfig, seen)
    for union in (SourceConfig, SinkConfig, DedupeConfig, AuthConfig):
        for model in _nested(union):
            _models(model, seen)
    parts = [_HEADER]
    for name, model in seen.items():
        parts.append(f"\n## {name}\n")
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith("Usage docs"):
            parts.append(f"\n{doc}\n")
        parts.append("\n| key | type | default | meaning |\n|---|---|---|---|\n")
        for key, field in model.model_fields.items():
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
            parts.append(
                f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |\n"
            )
    return "".join(parts)


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/configuration.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
