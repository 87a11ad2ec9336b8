"""Frozen, typed configurations: load from dicts, YAML or JSON; reject unknown keys.

A configuration is a frozen dataclass with keyword-only fields, each carrying its help text::

    @dataclass(frozen=True, kw_only=True)
    class OptimConfig:
        lr: float = field(default=1e-4, metadata={"help": "Adam learning rate (Sec. 4.1)"})

`load_config(OptimConfig, "run.yaml")` checks every key against the fields (a typo fails with the
key's name), coerces values to the annotated types (YAML's ``1e-4`` arrives as a string; lists
become tuples; nested mappings become nested configs) and returns the instance. `to_dict`,
`config_hash` and `describe` turn a config into plain data, a short stable hash and a table of
documented defaults.

A nested config field marked with `flat_section` (``field(..., metadata=flat_section("help"))``)
is a typed section in memory whose keys live at the parent's level in files: `to_dict` writes
them there, and `load_config` takes them there, as a mapping under the section's name, or as a
dotted override (``"optimiser.lr"``). A file format stays flat while the code reads
``config.optimiser.lr``; the section names and the flat names of one class must not collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import hashlib
import json
import math
import os
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from dasrlib.io import atomic_write_text

__all__ = [
    "MAX_YAML_NODES",
    "ConfigError",
    "HASH_FORMAT",
    "check_path_text",
    "config_hash",
    "describe",
    "flat_section",
    "load_config",
    "read_config_file",
    "require_range",
    "safe_load_yaml",
    "save_config",
    "shown",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and the class."""


SHOWN_CHARACTERS = 80
"""The most characters of a user's value an error message quotes (then "...")."""

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 3, 8, 8, 8
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = SHOWN_CHARACTERS


def shown(value: object) -> str:
    """``repr(value)`` for an error message: at most `SHOWN_CHARACTERS` characters and "..."
    (a 10 MB string or a deeply nested value is quoted by a short prefix, found in bounded time)."""
    if isinstance(value, str | bytes) and len(value) > SHOWN_CHARACTERS:
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    text = _SHOWN.repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


_MAX_PATH_CHARACTERS = 4096  # PATH_MAX on Linux
_MAX_NAME_BYTES = 255  # NAME_MAX: one folder or file name


def check_path_text(where: str, text: str) -> None:
    """Raise `ConfigError` naming `where` when `text` cannot be a path on this system (a NUL
    character, more than 4096 characters, or one name over 255 bytes)."""
    if "\0" in text:
        raise ConfigError(f"{where}: a path may not hold a NUL character, got {shown(text)}")
    if len(text) > _MAX_PATH_CHARACTERS:
        raise ConfigError(
            f"{where}: a path of {len(text)} characters is longer than any the system accepts "
            f"({_MAX_PATH_CHARACTERS}): {shown(text)}"
        )
    for part in Path(text).parts:
        if len(os.fsencode(part)) > _MAX_NAME_BYTES:
            raise ConfigError(
                f"{where}: the name {shown(part)} is longer than a folder or file name may be "
                f"({_MAX_NAME_BYTES} bytes)"
            )


MAX_YAML_NODES = 100_000
"""The most nodes a YAML document may expand to, aliases counted at every use (`safe_load_yaml`).

A parameter file has a few hundred; a "billion laughs" alias bomb has ~10^9 and is refused."""


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C: faster


class _BoundedLoader(_SafeLoader):
    """`yaml.SafeLoader` that refuses documents whose aliases expand beyond `max_nodes`."""

    max_nodes = MAX_YAML_NODES

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node, self.max_nodes)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Count `root`'s nodes as if every alias were expanded (memoised per shared node: fast)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > 200:
            raise ConfigError("YAML nesting is deeper than 200 levels")
        sizes[key] = 1  # a recursive alias counts once per cycle
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        sizes[key] = total
        if total > limit:
            raise ConfigError(
                f"YAML document expands to more than {limit} values through its aliases "
                "(an alias bomb?); refused"
            )
        return total

    size(root, 0)


def safe_load_yaml(text: str, *, max_nodes: int = MAX_YAML_NODES) -> Any:
    """`yaml.safe_load` with aliases expanded within a bound: a document that would expand to more
    than `max_nodes` values raises `ConfigError` at once (nothing is expanded to find out)."""
    loader = _BoundedLoader(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def flat_section(help: str) -> dict[str, Any]:  # noqa: A002 - the metadata key is "help"
    """Field metadata of a nested config section whose keys are stored at the parent's level."""
    return {"help": help, "flat": True}


def _is_flat(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("flat"))


def _flat_sections(cls: type) -> dict[str, tuple[str, type]]:
    """{flat key: (section field name, section class)} of `cls`'s flat sections."""
    hints = typing.get_type_hints(cls)
    owners: dict[str, tuple[str, type]] = {}
    plain = {f.name for f in dataclasses.fields(cls) if not _is_flat(f)}
    for f in dataclasses.fields(cls):
        if not _is_flat(f):
            continue
        section = hints[f.name]
        for sub in dataclasses.fields(section):
            if sub.name in owners or sub.name in plain:
                raise TypeError(f"{cls.__name__}: flat key {sub.name!r} appears twice")
            owners[sub.name] = (f.name, section)
    return owners


def load_config(
    cls: type[T],
    source: Mapping[str, Any] | str | os.PathLike[str] | T | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build a `cls` instance from a mapping, a YAML/JSON file path or an existing instance.

    `overrides` maps dotted keys (``"optim.lr"``) to values applied on top of `source`.
    Unknown keys, missing required fields and values of the wrong type raise `ConfigError`.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, cls):
        data = to_dict(source)
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, str | os.PathLike):
        data = read_config_file(source)
    else:
        raise TypeError(
            f"config source must be a mapping, a path or a {cls.__name__}, got {type(source)}"
        )
    flat = _flat_sections(cls)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key in flat and flat[key][0] == section:  # "optimiser.lr" of a flat section: "lr"
            dotted = key
        _set_dotted(data, dotted, value, cls)
    return _build(cls, data, cls.__name__)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; `ConfigError` naming the file when it is missing,
    unreadable, malformed or not a mapping (an empty file gives {})."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: permission denied") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc})") from exc
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {str(path)!r}: expected .yaml, .yml or .json")
    try:
        loaded = json.loads(text) if suffix == ".json" else safe_load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:]}: {first}") from exc
    except ConfigError as exc:  # an alias bomb
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return loaded


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, cls: type) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif dataclasses.is_dataclass(child) and not isinstance(child, type):
            child = node[part] = to_dict(child)
        elif not isinstance(child, dict):
            raise ConfigError(
                f"override {shown(dotted)} for {cls.__name__}: {shown(part)} is not a section"
            )
        node = child
    node[last] = value


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, got {shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    flat = _flat_sections(cls)
    if flat:
        data = _gather_flat(data, fields, flat, where)
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        known = [name for name in fields if not _is_flat(fields[name])] + list(flat)
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown key {shown(key)} for {cls.__name__} (at {where}){hint} "
            f"Known keys: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {name!r} for {cls.__name__} (at {where})")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc


def _gather_flat(
    data: Mapping[str, Any],
    fields: dict[str, dataclasses.Field[Any]],
    flat: dict[str, tuple[str, type]],
    where: str,
) -> dict[str, Any]:
    """`data` with each flat section's keys (flat, or a mapping under its name) under its name.

    A flat key wins over the same key in a section mapping (it is the more specific setting).
    """
    gathered: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in fields and _is_flat(fields[key]):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = to_dict(value)
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{where}.{key}: expected a mapping of fields, got {shown(value)}"
                )
            for sub, sub_value in value.items():
                sections.setdefault(key, {}).setdefault(sub, sub_value)
        elif key in flat:
            sections.setdefault(flat[key][0], {})[key] = value
        else:
            gathered[key] = value
    for key, value in data.items():  # flat keys override a section mapping's
        if key in flat:
            sections[flat[key][0]][key] = value
    return {**gathered, **sections}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("pathlib.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` to the annotated type `tp`, or raise `ConfigError` naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {shown(value)} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {shown(value)} is not one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(
                f"{where}: expected {len(args)} items, got {len(value)}: {shown(value)}"
            )
        if not args:
            return tuple(value)
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin in (list, frozenset, set):
        raise ConfigError(f"{where}: use tuple[...] for sequences in frozen configs, not {tp}")
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
        key_type, value_type = args if args else (Any, Any)
        return {
            _coerce(k, key_type, f"{where}.key"): _coerce(v, value_type, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: {shown(value)} is not one of {choices}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
    if tp is int:
        return _to_int(value, where)
    if tp is float:
        return _to_float(value, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {shown(value)}")
    if tp is Path:
        if isinstance(value, str | os.PathLike):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {shown(value)}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {shown(value)}")
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip()) if any(c in value for c in ".eE") else int(value, 0)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    raise ConfigError(f"{where}: expected an integer, got {shown(value)}")


def _to_float(value: Any, where: str) -> float:
    """A finite float: NaN and infinities are refused (no setting means "not a number")."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())  # YAML 1.1 reads 1e-4 (no dot) as a string
    if number is None:
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {shown(value)}")
    return number


def require_range(
    config: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise `ConfigError` naming `name` unless ``config.name`` (a number, or every item of a
    tuple of numbers) is finite and inside [low, high] (open ends with `low_open`/`high_open`)."""
    value = getattr(config, name)
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        ok = isinstance(item, int | float) and math.isfinite(item)
        if ok and low is not None:
            ok = item > low if low_open else item >= low
        if ok and high is not None:
            ok = item < high if high_open else item <= high
        if not ok:
            left = "(" if low_open else "["
            right = ")" if high_open or high is None else "]"
            lo_text = "-inf" if low is None else f"{low:g}"
            hi_text = "inf" if high is None else f"{high:g}"
            bounds = f"{left}{lo_text}, {hi_text}{right}"
            raise ConfigError(
                f"{type(config).__name__}.{name} must be in {bounds}, got {shown(value)}"
            )


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-ready data: tuples become lists, enums their values, paths strings."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(config)}")
    return _plain(config)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = _plain(getattr(value, f.name))
            if _is_flat(f):
                plain.update(item)
            else:
                plain[f.name] = item
        return plain
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


HASH_FORMAT = 2
"""The tag of the growth-safe hash payload (`config_hash`); format 1 hashed every field."""


def config_hash(config: Any, *, length: int = 12) -> str:
    """Short stable hash of what a config says (hex sha256 prefix); growth-safe.

    Hashed: the class name and the flat values (`to_dict`) that differ from the class defaults,
    tagged ``"format": HASH_FORMAT``, so adding a field with a default changes no existing hash.
    A class whose hashes predate this (format 1 hashed every field) lists the fields it had then
    in a class attribute ``HASHED_IN_FULL``: those are hashed whatever their value, and while
    every other field is at its default the payload is exactly format 1's (no tag), so old
    digests stay valid. Equal configs give equal hashes across processes and machines; key order
    does not matter.
    """
    values = to_dict(config)
    in_full = frozenset(getattr(type(config), "HASHED_IN_FULL", ()))
    defaults = _default_values(type(config))
    hashed = {
        k: v for k, v in values.items() if k in in_full or k not in defaults or v != defaults[k]
    }
    payload: dict[str, Any] = {"class": type(config).__qualname__, "values": hashed}
    if not in_full or not set(hashed) <= in_full:
        payload["format"] = HASH_FORMAT
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _default_values(cls: type) -> dict[str, Any]:
    """The flat plain default of every field of `cls` that has one (as `to_dict` writes it)."""
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if _is_flat(f):
            defaults.update(_plain(value))
        else:
            defaults[f.name] = _plain(value)
    return defaults


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write `config` as YAML (or JSON for a .json path), atomically."""
    data = to_dict(config)
    if Path(path).suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def describe(cls: type) -> str:
    """A Markdown table of every field (nested configs as dotted names): type, default, help."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, type_text, default, help_text in _describe_rows(cls, prefix=""):
        rows.append(f"| `{name}` | {type_text} | {default} | {help_text} |")
    return "\n".join(rows)


def _describe_rows(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = prefix + f.name
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows.extend(_describe_rows(tp, prefix=prefix if _is_flat(f) else name + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f"`{_show(f.default)}`"
        elif f.default_factory is not dataclasses.MISSING:
            default = f"`{_show(f.default_factory())}`"
        else:
            default = "required"
        help_text = str(f.metadata.get("help", "")).replace("|", "\\|")
        rows.append((name, _type_name(tp).replace("|", "\\|"), default, help_text))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        inner = ", ".join(_show(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(_plain(value))
