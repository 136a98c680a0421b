"""Typed dataclasses are the config: CLI flags and recipe files both come from their fields.

A stage declares one `@dataclass` whose fields carry a one-line docstring (the string literal
right under the field, as litgpt/jsonargparse read them). From it we derive:
  * argparse flags (`add_arguments` / `from_args`), help text = the field docstring;
  * recipe loading from TOML or YAML (`load_recipe`), where an unknown key is an error that lists
    the known ones, so a typo never silently falls back to a default.
Nested dataclass fields become sections (`[train]` in TOML, `train:` in YAML).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from primer.errors import PrimerError

T = TypeVar("T")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> the docstring written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, is_optional) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(name: str, tp: Any, value: Any, what: str = "config field") -> Any:
    """Coerce a recipe/CLI value to the field's type, with a clear error."""
    base, optional = _base_type(tp)
    if value is None:
        if optional or type(None) in typing.get_args(tp) or tp is Any:
            return None
        raise PrimerError(f"config field '{name}' may not be empty")
    origin = typing.get_origin(base)
    try:
        if dataclasses.is_dataclass(base):
            if not isinstance(value, dict):
                raise PrimerError(f"config section '{name}' must be a table of fields, got {value!r}")
            return from_dict(base, value, where=name, what=what)
        if origin is typing.Literal:
            if value not in typing.get_args(base):
                raise PrimerError(f"config field '{name}' must be one of {list(typing.get_args(base))}, got {value!r}")
            return value
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if origin in (list, tuple):
            args = typing.get_args(base)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v != ""]
            if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # tuple[int, float]: per position
                if len(value) != len(args):
                    raise ValueError(value)
                return tuple(_convert(name, a, v, what) for a, v in zip(args, value))
            (item,) = args[:1] or (str,)
            return (origin)(_convert(name, item, v, what) for v in value)
        if base is Path:
            return Path(value)
        if origin is dict or base is dict:
            value = json.loads(value) if isinstance(value, str) else value  # a flag gives JSON text
            if not isinstance(value, dict):
                raise ValueError(value)
            args = typing.get_args(base)
            if len(args) == 2 and dataclasses.is_dataclass(args[1]):  # dict[str, SomeRecord]
                return {k: _convert(f"{name}.{k}", args[1], v, what) for k, v in value.items()}
            return value
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
        return value
    except (TypeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise PrimerError(f"config field '{name}' expects {getattr(base, '__name__', base)}, got {value!r}") from e


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", what: str = "config field") -> T:
    """Build `cls` from a mapping (a recipe section, or a record read back from JSON).

    An unknown key is an error naming the known fields; so is a missing field that has no default
    (a stage summary the report reads must carry every field the report shows).
    """
    hints = _resolved_types(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    known = {f.name for f in fields}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    place = f" in section '{where}'" if where else ""
    unknown = sorted(set(data) - known)
    if unknown:
        raise PrimerError(
            f"unknown {what}(s) {unknown}{place}; known fields: {', '.join(sorted(known))}"
        )
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise PrimerError(f"missing {what}(s) {missing}{place} of {cls.__name__}")
    kwargs = {k: _convert(f"{where}.{k}" if where else k, hints[k], v, what) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain, JSON/TOML-friendly dict of a config dataclass (Paths become strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML or YAML recipe file into a dict, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise PrimerError(f"recipe file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            return tomllib.loads(text)
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
            if not isinstance(data, dict):
                raise PrimerError(f"{p}: a recipe must be a mapping of fields at the top level")
            return data
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise PrimerError(f"{p}: cannot parse recipe: {e}") from e
    raise PrimerError(f"{p}: recipe files must end in .toml, .yaml or .yml")


def load_recipe(path: str | Path, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Load `cls` from a TOML/YAML file, then apply `overrides` (e.g. from CLI flags)."""
    data = read_recipe_file(path)
    data.update(overrides or {})
    try:
        return from_dict(cls, data)
    except PrimerError as e:
        raise PrimerError(f"{path}: {e}") from e


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per scalar field of `cls` (nested dataclasses are recipe-only).

    Defaults are left as None (argparse.SUPPRESS) so `from_args` can tell "not given" from a
    value, letting flags override a recipe file without clobbering it with defaults.
    """
    docs = field_docs(cls)
    hints = _resolved_types(cls)
    own = cls.__dict__.get("__annotations__", {})
    # the class's own fields first, then inherited ones (e.g. SynthConfig's HttpOptions)
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        if f.name in skip or not f.init:
            continue
        base, _ = _base_type(hints[f.name])
        if dataclasses.is_dataclass(base):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        help_text = docs.get(f.name, "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings; a docstring's "%" must reach it as "%%".
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is typing.Literal:
            kw["choices"] = list(typing.get_args(base))
        else:
            kw["metavar"] = f.name.upper()
        parser.add_argument(flag, **kw)


def from_args(cls: type[T], ns: argparse.Namespace, base: T | None = None) -> T:
    """Build `cls` from parsed flags, on top of `base` (a recipe) or the defaults."""
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    start = to_dict(base) if base is not None else {}
    start.update(given)
    return from_dict(cls, start)


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """`cls` from the `[section]` table of a pipeline recipe (see primer.pipeline.runner), or from the file's
    top level when it is a one-stage recipe without sections. Other stages' sections are ignored."""
    data = read_recipe_file(path)
    if section in data:
        table, where = data[section], section
    elif any(isinstance(v, dict) for v in data.values()):
        raise PrimerError(f"{path}: no [{section}] section (sections: {', '.join(sorted(data))})")
    else:
        table, where = data, ""
    try:
        return from_dict(cls, table, where=where)
    except PrimerError as e:
        raise PrimerError(f"{path}: {e}") from e
