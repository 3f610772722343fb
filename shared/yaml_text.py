"""YAML written and read through libyaml where PyYAML was built with it (its wheels are): several
times faster than the pure-Python emitter and parser, the same documents; the pure-Python ones
where libyaml is missing.

``dump_blocks`` writes the block-style YAML Gantry renders (Kubernetes manifests, deployment
files) without PyYAML's representer where it can: mappings with string keys, lists, and scalars
whose text does not depend on where they stand (strings on one line without spaces, whole
numbers, booleans, null; whether a string is plain or quoted is PyYAML's resolver's answer). It
gives the bytes ``yaml.dump_all`` gives, or leaves the document to it: a float, a string with a
space or a line break, a list in a list or a long key all go to PyYAML. Building the node tree in
Python was most of what PyYAML spent on a manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import yaml

SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Plain in YAML 1.1 as PyYAML resolves it: begins with a letter, holds nothing a plain scalar may
# not, and is not one of the words read as a boolean or null (compared in lower case: "yEs" is
# left to PyYAML although it would be plain, which only costs time)
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")
_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})
# Ids, hashes, versions, images and times: no indicator first, no space, no ": " or " #", no
# quote; plain unless PyYAML would read them back as something else (a number, a time, a
# boolean), then single-quoted. Its own resolver says which (1 µs, where yaml.dump took 8).
_SIMPLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:+-]*")
_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"
_CACHED_UP_TO = 32  # characters: names, labels, versions; longer ones (and a Secret's data) are not kept
_LONGEST_SIMPLE_KEY = 128  # PyYAML writes a longer key as a complex key ("? ")


class _Unsupported(Exception):
    """A document the block writer leaves to PyYAML."""


def dump_blocks(documents: Iterable[Any], *, sort_keys: bool = True, explicit_start: bool = True) -> str:
    """``yaml.dump_all(documents, default_flow_style=False, allow_unicode=True, …)``: the same bytes."""
    documents = list(documents)
    try:
        lines: list[str] = []
        for document in documents:
            if type(document) is not dict or not document:
                raise _Unsupported
            if explicit_start:
                lines.append("---")
            elif lines:
                raise _Unsupported  # PyYAML starts a second document with "---" anyway
            _Writer(sort_keys, cached=document.get("kind") != "Secret").mapping(document, 0, lines, None)
        return "\n".join(lines) + "\n"
    except _Unsupported:
        text: str = yaml.dump_all(
            documents,
            Dumper=SAFE_DUMPER,
            explicit_start=explicit_start,
            sort_keys=sort_keys,
            default_flow_style=False,
            allow_unicode=True,
        )
        return text


class _Writer:
    """One document's lines. A list or mapping met twice in it would be an anchor and an alias."""

    def __init__(self, sort_keys: bool, *, cached: bool) -> None:
        self.sort_keys, self.cached = sort_keys, cached
        self.seen: set[int] = set()

    def once(self, container: dict[Any, Any] | list[Any]) -> None:
        if id(container) in self.seen:
            raise _Unsupported
        self.seen.add(id(container))

    def mapping(self, mapping: dict[Any, Any], indent: int, lines: list[str], lead: str | None) -> None:
        """A block mapping at ``indent``; its first key after ``lead`` ("- " of a list item) if given."""
        self.once(mapping)
        keys = list(mapping)
        if self.sort_keys:
            if not all(type(key) is str for key in keys):
                raise _Unsupported
            keys.sort()
        for number, key in enumerate(keys):
            if type(key) is not str or not key or len(key) >= _LONGEST_SIMPLE_KEY:
                raise _Unsupported  # an empty key is written two ways: libyaml's and pure PyYAML's
            start = lead if number == 0 and lead is not None else " " * indent
            value = mapping[key]
            if type(value) is dict and value:
                lines.append(f"{start}{_scalar(key, True)}:")
                self.mapping(value, indent + 2, lines, None)
            elif type(value) is list and value:
                lines.append(f"{start}{_scalar(key, True)}:")
                self.sequence(value, indent, lines)  # a list in a mapping is not indented
            else:
                lines.append(f"{start}{_scalar(key, True)}: {self.leaf(value)}")

    def sequence(self, items: list[Any], indent: int, lines: list[str]) -> None:
        self.once(items)
        lead = " " * indent + "- "
        for item in items:
            if type(item) is dict and item:
                self.mapping(item, indent + 2, lines, lead)
            elif type(item) is list and item:
                raise _Unsupported
            else:
                lines.append(lead + self.leaf(item))

    def leaf(self, value: Any) -> str:
        if type(value) in (dict, list):
            self.once(value)  # empty: "{}" or "[]"
        return _leaf(value, self.cached)


def _leaf(value: Any, cached: bool) -> str:
    """A scalar or an empty container. Exact types only: PyYAML's safe dumper refuses subclasses
    (an enum, an OrderedDict), and is left to refuse them."""
    kind = type(value)
    if kind is str:
        return _scalar(value, cached)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is dict and not value:
        return "{}"
    if kind is list and not value:
        return "[]"
    raise _Unsupported  # floats and anything else: PyYAML's own rules


def _scalar(text: str, cached: bool) -> str:
    """How ``text`` is written as a key or a value; short ones (keys, names, labels, versions) are
    remembered, where ``cached`` allows (not a Secret's data): a manifest writes about 160 scalars,
    most of them the same from one manifest to the next."""
    if cached and len(text) <= _CACHED_UP_TO:
        return _known_scalar(text)
    return _written_scalar(text, cached)


def _written_scalar(text: str, cached: bool) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _WORDS:
        return text
    if _SIMPLE.fullmatch(text) and not text.endswith(":"):  # a ":" last is an indicator
        plain = _RESOLVER.resolve(yaml.nodes.ScalarNode, text, (True, False)) == _STR  # type: ignore[no-untyped-call]
        return text if plain else f"'{text}'"
    if " " in text or "\n" in text or "\r" in text:
        raise _Unsupported  # may be folded at the line width, or written on several lines
    if cached and len(text) <= _CACHED_UP_TO:
        return _styled_cached(text)
    return _styled(text)


def _styled(text: str) -> str:
    """The scalar as PyYAML writes it alone: plain or single-quoted; double-quoted ones (escapes,
    split anywhere at the line width) are left to PyYAML."""
    written: str = yaml.dump(text, Dumper=SAFE_DUMPER, allow_unicode=True, width=1_000_000)
    styled = written.removesuffix("\n...\n").removesuffix("\n")
    if "\n" in styled or styled.startswith('"'):
        raise _Unsupported
    return styled


_styled_cached = lru_cache(maxsize=4096)(_styled)


@lru_cache(maxsize=8192)
def _known_scalar(text: str) -> str:
    return _written_scalar(text, True)  # an _Unsupported raised is not remembered: raised each time
