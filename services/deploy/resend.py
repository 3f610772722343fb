"""Resending a request: an ``Idempotency-Key`` names one request, so its fingerprint is kept with
the deployment it made, and the same key with another request is refused (422)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import Depends, Request


async def request_fingerprint(request: Request) -> str:
    """Method, path and body (as JSON, key order and spacing aside) of the request, hashed."""
    body = await request.body()
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")) if body else ""
    except ValueError:
        canonical = body.decode("utf-8", errors="replace")
    text = f"{request.method} {request.url.path}\n{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


Fingerprint = Annotated[str, Depends(request_fingerprint)]
