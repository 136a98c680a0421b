"""Typed dataclasses are the config: CLI flags and recipe files both come from their fields.

A stage declares one `@dataclass` whose fields carry a one-line docstring (the string literal
right under the field, as litgpt/jsonargparse read them). From it we derive:
  * argparse flags (`add_arguments` / `from_args`), help text = the field docstring;
  * recipe loading from TOML or YAML (`load_recipe`), where an unknown key is an error that lists
    the known ones, so a typo never silently falls back to a default;
  * validation (`check_config`), run on every config a recipe or the command line builds, before
    any work: each value has its field's type (strictly: a bool is not an int, a float is finite),
    and each number lies in its field's range. A plain `int`/`float` field is >= 0; a field that
    needs more says so in its annotation, e.g. `n: Count = 100` (>= 1), `top_p: PositiveFraction`,
    or `Annotated[float, Range(ge=-1)]`; checks across fields go in the class's `validate()`.
Nested dataclass fields become sections (`[train]` in TOML, `train:` in YAML).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

from primer.errors import PrimerError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The values a numeric config field allows: `Annotated[int, Range(ge=1)]`. Without one, >= 0."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        if self.ge is not None and not value >= self.ge:
            return f"must be at least {self.ge:g}"
        if self.gt is not None and not value > self.gt:
            return f"must be above {self.gt:g}"
        if self.le is not None and not value <= self.le:
            return f"must be at most {self.le:g}"
        if self.lt is not None and not value < self.lt:
            return f"must be below {self.lt:g}"
        return None


NON_NEGATIVE = Range(ge=0)
Count = Annotated[int, Range(ge=1)]
"""A number of things (documents, steps, tokens, workers...): at least 1."""
Positive = Annotated[float, Range(gt=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
PositiveFraction = Annotated[float, Range(gt=0, le=1)]
"""In (0, 1], e.g. top_p."""


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


@functools.cache
def _ranges(cls: type) -> dict[str, Range]:
    """Field -> its declared Range (from `Annotated[..., Range(...)]`, also inside `X | None`)."""
    out = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        for t in (tp, *typing.get_args(tp)):
            if typing.get_origin(t) is Annotated:
                out[name] = next((m for m in t.__metadata__ if isinstance(m, Range)), NON_NEGATIVE)
    return out


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, is_optional) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _label(name: str) -> str:
    """'train.max_steps' -> "'max_steps' in [train]", as errors name a field."""
    section, _, field = name.rpartition(".")
    return f"'{field}' in [{section}]" if section else f"'{field}'"


def _convert(name: str, tp: Any, value: Any, what: str = "config field") -> Any:
    """Coerce a recipe/CLI value to the field's type, with a clear error."""
    base, optional = _base_type(tp)
    if value is None:
        if optional or type(None) in typing.get_args(tp) or tp is Any:
            return None
        raise PrimerError(f"config field {_label(name)} may not be empty")
    origin = typing.get_origin(base)
    try:
        if dataclasses.is_dataclass(base):
            if not isinstance(value, dict):
                raise PrimerError(f"config section [{name}] must be a table of fields, got {value!r}")
            return from_dict(base, value, where=name, what=what)
        if origin is typing.Literal:
            if value not in typing.get_args(base):
                raise PrimerError(f"config field {_label(name)} must be one of {list(typing.get_args(base))}, got {value!r}")
            return value
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise TypeError(value)  # 1 or 0 in a recipe is a typo more often than a boolean
            return value
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
            if not isinstance(value, (str, Path)):
                raise TypeError(value)
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
            if isinstance(value, bool) or (base is str and not isinstance(value, str)):
                raise TypeError(value)  # `max_steps = true` is not 1 step
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
        return value
    except (TypeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise PrimerError(f"config field {_label(name)} expects {getattr(base, '__name__', base)}, got {value!r}") from e


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


def _type_problem(tp: Any, value: Any) -> str | None:
    """Why `value` does not have type `tp` (None: it does); strict, for values already converted."""
    if tp is Any or isinstance(tp, TypeVar):
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        probs = [_type_problem(a, value) for a in typing.get_args(tp)]
        return None if any(p is None for p in probs) else next(p for p in probs if p)
    if tp is type(None):
        return None if value is None else "may not be empty"
    if origin is typing.Literal:
        return None if value in typing.get_args(tp) else f"must be one of {list(typing.get_args(tp))}"
    if dataclasses.is_dataclass(tp):
        return None if isinstance(value, tp) else f"must be a {tp.__name__} section"
    want = {int: (int,), float: (int, float), str: (str,), bool: (bool,), Path: (Path, str)}.get(tp)
    if want is not None:
        if not isinstance(value, want) or (tp is not bool and isinstance(value, bool)):
            return f"expects {tp.__name__}, got {value!r}"
        if tp is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return None
    if origin in (list, tuple, dict) or tp in (list, tuple, dict):
        kind = origin or tp
        if not isinstance(value, kind):
            return f"expects a {kind.__name__}, got {value!r}"
        args = typing.get_args(tp)
        if kind is dict:
            items = list(value.values()) if len(args) == 2 else []
            item_types = [args[1]] * len(items) if args else []
        elif kind is tuple and len(args) > 1 and args[1] is not Ellipsis:
            items, item_types = list(value), list(args)
        else:
            items = list(value)
            item_types = [args[0] if args else Any] * len(items)
        for t, v in zip(item_types, items):
            if (p := _type_problem(t, v)) is not None:
                return f"{p} (in {value!r})"
        return None
    return None


def _numbers(value: Any) -> list[float]:
    """The numbers a field's Range applies to: the value, or the items of a list/tuple of numbers."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def check_config(obj: T, where: str = "") -> T:
    """Check every field of config dataclass `obj` (and of its nested sections) against its type and
    range, then run the class's own `validate()` if it has one; a PrimerError names the first bad field.
    Returns `obj`, so `cfg = check_config(from_dict(...))` reads naturally."""
    cls = type(obj)
    hints = _resolved_types(cls)
    ranges = _ranges(cls)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, f"{where}.{f.name}" if where else f.name)
            continue
        problem = _type_problem(hints[f.name], value)
        if problem is None:
            rng = ranges.get(f.name, NON_NEGATIVE)
            problem = next((p for x in _numbers(value) if (p := rng.problem(x))), None)
            if problem is not None:
                problem += f", got {value!r}"
        if problem is not None:
            raise PrimerError(f"config field {_label(f'{where}.{f.name}' if where else f.name)} {problem}")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except PrimerError as e:
            raise PrimerError(f"[{where}] {e}" if where else str(e)) from None
    return obj


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
        return check_config(from_dict(cls, data))
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
    return check_config(from_dict(cls, start))


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
        return check_config(from_dict(cls, table, where=where), where)
    except PrimerError as e:
        raise PrimerError(f"{path}: {e}") from e
