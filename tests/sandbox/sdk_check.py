"""Validate a JSON body against an official `zuora_sdk` model, strictly.

The SDK's models override `__init__` to skip validation, and pydantic then skips it in
`model_validate`/`from_dict` too: parsing with them proves nothing. This walks a model's
declared fields instead and validates every value against its declared type (nested models
recursively, leaves with a pydantic `TypeAdapter`), so a wrong type, a value outside an enum
or a missing required field is reported. Unknown keys are allowed, as the SDK keeps them in
`additional_properties`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


def sdk_model(name: str) -> type[BaseModel]:
    """An SDK model class by name, importing only its own module and what it needs.

    `import zuora_sdk.models` loads all 1,700 models (about 20 s); loading one model's
    module under temporary package stubs takes a fraction of a second. The stubs are removed
    again, so a later full `import zuora_sdk` still works.
    """
    spec = importlib.util.find_spec("zuora_sdk")
    assert spec is not None and spec.submodule_search_locations, "zuora-sdk is not installed"
    root = spec.submodule_search_locations[0]
    module_name = "zuora_sdk.models." + _module_file(f"{root}/models", name)
    installed = []
    for package, path in (("zuora_sdk", root), ("zuora_sdk.models", f"{root}/models")):
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [path]
            sys.modules[package] = stub
            installed.append(package)
    try:
        module = importlib.import_module(module_name)
    finally:
        for package in installed:
            del sys.modules[package]
    model: type[BaseModel] = getattr(module, name)
    return model


@functools.cache
def _module_file(directory: str, name: str) -> str:
    guess = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    if Path(directory, f"{guess}.py").exists():
        return guess
    for path in Path(directory).glob("*.py"):
        if f"class {name}(" in path.read_text():
            return path.stem
    raise LookupError(f"no zuora_sdk model {name}")


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def check_model(model: type[BaseModel], data: Any, path: str = "$") -> list[str]:
    """Every way `data` disagrees with `model`; empty when it conforms."""
    if not isinstance(data, dict):
        return [f"{path}: expected an object, got {type(data).__name__}"]
    errors: list[str] = []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, field in fields.items():
        if field.is_required() and key not in data:
            errors.append(f"{path}.{key}: required")
    for key, value in data.items():
        field = fields.get(key)
        if field is not None:
            errors.extend(_check(field.annotation, value, f"{path}.{key}"))
    return errors


def _check(annotation: Any, value: Any, path: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        attempts = [_check(arg, value, path) for arg in args if arg is not type(None)]
        return [] if any(not a for a in attempts) else attempts[0]
    if value is None:
        return [f"{path}: null where a value is required"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, item in enumerate(value) for e in _check(args[0], item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        return [e for k, item in value.items() for e in _check(args[1], item, f"{path}.{k}")]
    if _is_model(annotation):
        return check_model(annotation, value, path)
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        return [f"{path}: {exc.errors()[0]['msg']} (got {value!r})"]
    return []
