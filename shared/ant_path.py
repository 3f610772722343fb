"""Ant-style route paths, as the gateway keeps them and deploy renders them: ``/`` then segments,
``*`` for one segment, ``**`` (last only) for any rest."""

from __future__ import annotations

WILDCARDS = ("*", "**")


def segments(path: str) -> list[str]:
    """``/shop/*/items`` → ``["shop", "*", "items"]``."""
    return path[1:].split("/")


def literal_prefix(path: str) -> str:
    """The segments before the first wildcard: what strip-prefix removes ('' when none)."""
    literal: list[str] = []
    for segment in segments(path):
        if segment in WILDCARDS:
            break
        literal.append(segment)
    return "/" + "/".join(literal) if literal else ""
