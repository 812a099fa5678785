"""shared/models.py holds only the contract between the planes: every model it defines is read by the data
plane (named in data_plane/, or a field of such a model). Records only the control plane uses live in
control_plane/records.py."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

from pydantic import BaseModel

import shared.models

ROOT = Path(__file__).resolve().parent.parent


def _models_in(annotation: object) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        found.add(annotation)
    for argument in typing.get_args(annotation):
        found |= _models_in(argument)
    return found


def _defined_models() -> dict[str, type[BaseModel]]:
    return {
        name: value
        for name, value in vars(shared.models).items()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == shared.models.__name__
    }


def test_every_shared_model_is_read_by_the_data_plane() -> None:
    source = "\n".join(path.read_text() for path in (ROOT / "data_plane").rglob("*.py"))
    defined = _defined_models()
    reached = {model for name, model in defined.items() if re.search(rf"\b{name}\b", source)}
    frontier = list(reached)
    while frontier:
        for field in frontier.pop().model_fields.values():
            for model in _models_in(field.annotation) - reached:
                reached.add(model)
                frontier.append(model)
    bases = {base for model in reached for base in model.__mro__ if base in defined.values()}
    unused = sorted(name for name, model in defined.items() if model not in reached | bases)
    assert unused == [], f"control-plane-only models in shared/models.py: {unused}"
