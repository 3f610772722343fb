"""Typed errors of Gantry's use cases; the API maps each to an HTTP status and ``{"detail": ...}``.

The message is for a person: it says what is wrong and how to fix it.
"""

from __future__ import annotations


class GantryError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(GantryError):
    """The request cannot be read at all (not JSON, nested too deeply)."""

    status_code = 400


class InvalidInput(GantryError):
    status_code = 422


class NotAuthenticated(GantryError):
    status_code = 401


class Forbidden(GantryError):
    status_code = 403


class NotFound(GantryError):
    status_code = 404


class Conflict(GantryError):
    status_code = 409


class TooLarge(GantryError):
    status_code = 413


class UpstreamUnavailable(GantryError):
    status_code = 502


class PoisonEvent(Exception):
    """An event that can never be applied (bad shape, unknown subject): it goes to the DLQ."""
