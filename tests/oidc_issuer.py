"""A stand-in OpenID Connect issuer: a real HTTP server on loopback serving the discovery document
and the key set, with keys the test makes (RSA for RS256, P-256 for ES256) and tokens it signs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "gantry-application-id"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class StandInIssuer:
    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, PrivateKey]] = {}  # kid -> (algorithm, private key)
        self.published: list[str] = []
        self.requests: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StandInIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """The issuer goes down: its port refuses connections."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def new_key(self, algorithm: str = "RS256", *, publish: bool = True) -> str:
        kid = f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}"
        key: PrivateKey
        key = rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = (algorithm, key)
        if publish:
            self.published.append(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            algorithm, key = self.keys[kid]
            public = key.public_key()
            jwk = (
                RSAAlgorithm.to_jwk(public, as_dict=True)
                if algorithm == "RS256"
                else ECAlgorithm.to_jwk(public, as_dict=True)
            )  # type: ignore[arg-type]
            keys.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str, *, ttl: int = 300, **claims: Any) -> str:
        """A token signed with key ``kid``; ``claims`` override or add to a GitLab-like ID token."""
        algorithm, key = self.keys[kid]
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "42", "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm, headers={"kid": kid}
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests[self.path] += 1
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/oauth/discovery/keys"}
                elif self.path == "/oauth/discovery/keys":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
