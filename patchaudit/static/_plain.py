"""Strict conversion between the analysis dataclasses and plain JSON values (the cache format).

Conversion is driven by type annotations, so the cache holds data and never names a type: a
dataclass becomes a JSON array of its fields in declaration order, each converted by its
annotation, and comes back as exactly that dataclass with exactly the annotated containers
(tuples stay tuples, frozensets frozensets, int dictionary keys ints). Values annotated ``Any``
or ``object`` (hit arguments and evidence, literal keyword values of a patch call) use a small
tagged encoding of the builtin value types. :func:`decoder` checks every value against its
annotation and raises :class:`ShapeError` on anything else.

Supported annotations: ``int``, ``float``, ``str``, ``bool``, ``None``, ``T | None``, enums,
dataclasses, ``list[T]``, ``frozenset[T]``, ``tuple[T, ...]``, ``tuple[A, B]``,
``dict[K, V]`` and ``Any``/``object``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import Any

__all__ = ["ShapeError", "decoder", "encoder"]

Convert = Callable[[Any], Any]
_SCALARS = (int, float, str, bool)


class ShapeError(ValueError):
    """Plain data that does not have the annotated shape."""


@functools.cache
def encoder(tp: Any) -> Convert:
    """A function turning a value of type ``tp`` into JSON-ready builtins."""
    return _compile(tp, encode=True)


@functools.cache
def decoder(tp: Any) -> Convert:
    """A function turning what :func:`encoder` produced back into a value of type ``tp``."""
    return _compile(tp, encode=False)


def _compile(tp: Any, *, encode: bool) -> Convert:
    make = encoder if encode else decoder
    if tp is Any or tp is object:
        return _encode_any if encode else _decode_any
    if tp is None or tp is type(None):
        return _exact(type(None))
    if tp in _SCALARS:  # checked both ways: what is written is exactly what is read back
        return _exact(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp, encode)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, encode)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if len(args) != 2 or len(inner) != 1:
            raise TypeError(f"only `T | None` unions are supported, not {tp}")
        return _optional(make(inner[0]))
    if origin in (list, frozenset):
        return _sequence(origin, args[0], encode)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(tuple, args[0], encode)
        return _fixed_tuple(args, encode)
    if origin is dict:
        return _mapping(args[0], make(args[0]), make(args[1]), encode)
    raise TypeError(f"no plain form for {tp!r}")


def _exact(tp: type) -> Convert:
    def check(value: Any) -> Any:
        if type(value) is not tp:  # `type is`: True is not an int here, 1 is not a float
            raise ShapeError(f"expected {tp.__name__}, got {type(value).__name__}")
        return value

    return check


def _optional(inner: Convert) -> Convert:
    return lambda value: None if value is None else inner(value)


def _enum(tp: type[enum.Enum], encode: bool) -> Convert:
    if encode:
        return lambda value: value.value

    def decode(value: Any) -> Any:
        try:
            return tp(value)
        except (ValueError, TypeError):
            raise ShapeError(f"not a {tp.__name__}: {value!r}") from None

    return decode


def _dataclass(tp: type, encode: bool) -> Convert:
    hints = typing.get_type_hints(tp)
    names = tuple(f.name for f in dataclasses.fields(tp))
    if encode:
        converters = tuple(encoder(hints[name]) for name in names)
        return lambda value: [c(getattr(value, n)) for c, n in zip(converters, names, strict=True)]
    # Every field's JSON type is checked in one pass at C speed; only fields that need building
    # (containers, enums, dataclasses) get a converter call.
    allowed = tuple(_json_types(hints[name]) for name in names)
    convert = tuple(
        (i, decoder(hints[name])) for i, name in enumerate(names) if not _is_plain(hints[name])
    )
    # Build like pickle does (object.__new__, then the instance dict): same object, and about
    # twice as fast as calling the generated __init__ of a frozen dataclass.
    fast = not hasattr(tp, "__post_init__") and not hasattr(tp, "__slots__")
    new = object.__new__

    def decode(value: Any) -> Any:
        if (
            type(value) is not list
            or len(value) != len(names)
            or not all(map(frozenset.__contains__, allowed, map(type, value)))
        ):
            raise ShapeError(f"expected the {len(names)} fields of {tp.__name__}")
        values = list(value)
        for i, converter in convert:
            values[i] = converter(values[i])
        if not fast:
            return tp(*values)
        obj = new(tp)
        obj.__dict__.update(zip(names, values, strict=True))
        return obj

    return decode


def _is_plain(tp: Any) -> bool:
    """A scalar or ``scalar | None``: its JSON value is the value itself."""
    if tp in _SCALARS or tp is type(None):
        return True
    args = typing.get_args(tp)
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and all(
        a in _SCALARS or a is type(None) for a in args
    )


def _json_types(tp: Any) -> frozenset[type]:
    """The types json.loads can give for a value of annotation ``tp`` (checked more deeply by
    the converter when there is one)."""
    if tp is Any or tp is object:
        return frozenset({type(None), bool, int, float, str, dict})
    if tp in _SCALARS or tp is type(None):
        return frozenset({tp})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return frozenset(type(member.value) for member in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return frozenset().union(*(_json_types(a) for a in args))
    if origin is dict and args[0] is str:
        return frozenset({dict})
    return frozenset({list})  # dataclasses, lists, tuples, frozensets, dicts as pairs


def _sequence(kind: type, item_type: Any, encode: bool) -> Convert:
    item = (encoder if encode else decoder)(item_type)
    if encode:
        if kind is frozenset:  # sorted when possible, so equal sets give byte-equal files
            return lambda value: _sorted([item(v) for v in value])
        return lambda value: [item(v) for v in value]
    scalar = {item_type} if item_type in _SCALARS else None

    def decode(value: Any) -> Any:
        if type(value) is not list:
            raise ShapeError(f"expected a list for {kind.__name__}")
        if scalar is not None:  # the common case, checked at C speed
            if value and not set(map(type, value)) <= scalar:
                raise ShapeError(f"expected a list of {item_type.__name__}")
            return list(value) if kind is list else kind(value)
        items = [item(v) for v in value]
        return items if kind is list else kind(items)

    return decode


def _fixed_tuple(item_types: tuple[Any, ...], encode: bool) -> Convert:
    items = tuple((encoder if encode else decoder)(t) for t in item_types)
    if encode:
        return lambda value: [c(v) for c, v in zip(items, value, strict=True)]
    scalars = item_types if all(t in _SCALARS for t in item_types) else None

    def decode(value: Any) -> Any:
        if type(value) is not list or len(value) != len(items):
            raise ShapeError(f"expected a list of {len(items)}")
        if scalars is not None:  # (line, column) and friends: one C-speed comparison
            if tuple(map(type, value)) != scalars:
                raise ShapeError(f"expected {scalars}")
            return tuple(value)
        return tuple([c(v) for c, v in zip(items, value, strict=True)])

    return decode


def _mapping(key_type: Any, key: Convert, val: Convert, encode: bool) -> Convert:
    if key_type is str:  # a JSON object; anything else is a list of [key, value] pairs
        if encode:
            return lambda value: {key(k): val(v) for k, v in value.items()}

        def decode_object(value: Any) -> Any:
            if type(value) is not dict:
                raise ShapeError("expected an object")
            return {k: val(v) for k, v in value.items()}

        return decode_object
    if encode:
        return lambda value: [[key(k), val(v)] for k, v in value.items()]

    def decode_pairs(value: Any) -> Any:
        if type(value) is not list:
            raise ShapeError("expected a list of pairs")
        out = {}
        for pair in value:
            if type(pair) is not list or len(pair) != 2:
                raise ShapeError("expected a [key, value] pair")
            out[key(pair[0])] = val(pair[1])
        return out

    return decode_pairs


def _sorted(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return items


# -- values of unknown type: None, bool, int, float and str as themselves, the rest tagged ----
_TAGS: dict[type, str] = {
    list: "list",
    tuple: "tuple",
    frozenset: "frozenset",
    set: "set",
    dict: "dict",
    bytes: "bytes",
    complex: "complex",
}


def _encode_any(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in _SCALARS:
        return value
    if value is Ellipsis:
        return {"ellipsis": None}
    tag = _TAGS.get(kind)
    if tag is None:
        raise TypeError(f"no plain form for a {kind.__name__} value")
    if kind is dict:
        return {tag: [[_encode_any(k), _encode_any(v)] for k, v in value.items()]}
    if kind is bytes:
        return {tag: value.hex()}
    if kind is complex:
        return {tag: [value.real, value.imag]}
    items = [_encode_any(v) for v in value]
    return {tag: _sorted(items) if kind in (set, frozenset) else items}


def _decode_any(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in _SCALARS:
        return value
    if kind is not dict or len(value) != 1:
        raise ShapeError("expected a scalar or a one-key tagged object")
    ((tag, data),) = value.items()
    try:
        if tag == "ellipsis" and data is None:
            return Ellipsis
        if tag == "bytes" and type(data) is str:
            return bytes.fromhex(data)
        if tag == "complex" and type(data) is list and len(data) == 2:
            real, imag = (_exact(float)(part) for part in data)
            return complex(real, imag)
        if type(data) is not list:
            raise ShapeError(f"bad tagged value {tag!r}")
        if tag == "dict":
            out = {}
            for pair in data:
                if type(pair) is not list or len(pair) != 2:
                    raise ShapeError("expected a [key, value] pair")
                out[_decode_any(pair[0])] = _decode_any(pair[1])
            return out
        items = [_decode_any(v) for v in data]
        constructors: dict[str, Callable[[list[Any]], Any]] = {
            "list": list,
            "tuple": tuple,
            "frozenset": frozenset,
            "set": set,
        }
        if tag in constructors:
            return constructors[tag](items)
    except (ValueError, TypeError) as exc:  # unhashable keys, bad hex
        raise ShapeError(f"bad tagged value {tag!r}: {exc}") from None
    raise ShapeError(f"unknown tag {tag!r}")
