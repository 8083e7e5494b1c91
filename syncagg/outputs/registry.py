"""The registry of output formats: built-in ones and plugins from entry points.

A plugin package makes a format available by naming its ``Output``
subclass in the ``syncagg.formats`` entry point group::

    [project.entry-points."syncagg.formats"]
    tsv = "mypackage.tsv:Tsv"

The entry point's name is the format's name. Entry points are read on
every lookup, so a package installed while the program runs is found
once ``importlib.invalidate_caches()`` has run.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from syncagg.outputs.base import Output

__all__ = [
    "ENTRY_POINT_GROUP",
    "FormatError",
    "available_formats",
    "format_class",
    "make_output",
    "output_for_path",
    "register_format",
]

logger = logging.getLogger("syncagg.outputs")

ENTRY_POINT_GROUP = "syncagg.formats"

# Formats registered in this process, built-in ones first: name -> class.
_REGISTERED: dict[str, type[Output]] = {}
_BUILTINS_LOADED = False


class FormatError(ValueError):
    """A format name or file suffix that matches no format, or a broken plugin."""


def register_format(output_type: type[Output], name: str | None = None) -> type[Output]:
    """Register an ``Output`` subclass under ``name`` (default: its ``format``) and return it.

    Usable as a class decorator. A name that is already taken by another
    class raises ``FormatError``.
    """
    _check_output_type(output_type, "register_format")
    _load_builtins()
    name = name or output_type.format
    existing = _REGISTERED.get(name)
    if existing is not None and existing is not output_type:
        raise FormatError(
            f"format name {name!r} is already registered by {_qualified(existing)}; "
            "choose another name"
        )
    _REGISTERED[name] = output_type
    return output_type


def available_formats() -> dict[str, type[Output]]:
    """Return every format by name: built-in and registered ones, then plugins.

    A plugin whose name is taken, or that fails to load, is left out with
    a WARNING on the ``syncagg.outputs`` logger.
    """
    _load_builtins()
    formats = dict(_REGISTERED)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in formats:
            if formats[entry.name].__module__ != entry.module:
                logger.warning(
                    "ignoring format plugin %s = %s: the name is taken by %s",
                    entry.name, entry.value, _qualified(formats[entry.name]),
                )
            continue
        try:
            formats[entry.name] = _load_plugin(entry)
        except FormatError as error:
            logger.warning("ignoring format plugin %s: %s", entry.name, error)
    return formats


def format_class(name: str) -> type[Output]:
    """Return the format registered as ``name``, or raise ``FormatError`` listing the names."""
    formats = available_formats()
    try:
        return formats[name]
    except KeyError:
        raise FormatError(
            f"unknown output format {name!r}; use one of {', '.join(formats)}, or install "
            f"a package that provides it through the {ENTRY_POINT_GROUP!r} entry point group"
        ) from None


def output_for_path(path: str | os.PathLike[str]) -> Output:
    """Return an output of the format whose suffixes contain the suffix of ``path``."""
    return make_output(path)


def make_output(path: str | os.PathLike[str], format: str | None = None, **settings: Any) -> Output:
    """Return an output for ``path``, of the format named ``format`` or chosen by the suffix.

    ``settings`` go to the format's constructor, for example
    ``make_output("out/rows.parquet", compression="snappy")``.
    """
    if format is not None:
        return format_class(format)(path, **settings)

    formats = available_formats()
    suffix = Path(path).suffix.lower()
    for output_type in formats.values():
        if suffix in output_type.suffixes:
            return output_type(path, **settings)

    known = ", ".join(s for output_type in formats.values() for s in output_type.suffixes)
    raise FormatError(
        f"cannot choose an output format for {os.fspath(path)!r} from its suffix "
        f"{suffix!r}; use one of {known}, or pass an output object such as "
        "syncagg.Parquet(path)"
    )


def _load_plugin(entry: EntryPoint) -> type[Output]:
    try:
        loaded = entry.load()
    except Exception as exc:  # noqa: BLE001 - any import error makes the plugin unusable
        raise FormatError(f"loading {entry.value} failed: {type(exc).__name__}: {exc}") from exc
    _check_output_type(loaded, f"entry point {entry.name} = {entry.value}")
    return loaded  # type: ignore[no-any-return]


def _check_output_type(value: Any, where: str) -> None:
    if not (isinstance(value, type) and issubclass(value, Output)):
        raise FormatError(f"{where} must name a subclass of syncagg.Output, got {value!r}")
    if not isinstance(getattr(value, "format", None), str):
        raise FormatError(f"{where}: {_qualified(value)} sets no format name (format = '...')")


def _qualified(output_type: type) -> str:
    return f"{output_type.__module__}.{output_type.__qualname__}"


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from syncagg.outputs.arrowipc import ArrowIpc
    from syncagg.outputs.csvfile import Csv
    from syncagg.outputs.jsonarray import Json
    from syncagg.outputs.jsonlines import JsonLines
    from syncagg.outputs.parquet import Parquet

    for output_type in (JsonLines, Json, Csv, Parquet, ArrowIpc):
        register_format(output_type)
