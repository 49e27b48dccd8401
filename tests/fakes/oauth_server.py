"""A small OAuth 2.1 authorization server, for tests where the real one
(tests/conformance/oauth_server.mjs, Node) cannot play the part: metadata, JWKS,
``/authorize`` (consents at once: redirects with a code), ``/token`` (RS256 JWTs the
recorder's ``--oauth-issuer`` accepts, and a refresh token). With ``echo_credentials``
it refuses every client with ``invalid_client`` and echoes the request's
Authorization header and body in ``error_description``, as a careless server does."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


class FakeAuthServer:
    def __init__(self, *, echo_credentials: bool = False) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.echo_credentials = echo_credentials
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        self._jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        self.token_requests: list[dict[str, str]] = []
        self.issued: set[str] = set()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _token(self) -> dict[str, Any]:
        import jwt

        access = jwt.encode({"iss": self.issuer, "sub": "person", "exp": int(time.time()) + 3600},
                            self._key, algorithm="RS256", headers={"kid": "k1"})
        refresh = secrets.token_urlsafe(24)
        self.issued |= {access, refresh}
        return {"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                if parts.path.startswith(("/.well-known/oauth-authorization-server",
                                          "/.well-known/openid-configuration")):
                    self._json(200, {
                        "issuer": fake.issuer, "authorization_endpoint": fake.issuer + "/authorize",
                        "token_endpoint": fake.issuer + "/token", "jwks_uri": fake.issuer + "/jwks",
                        "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]})
                elif parts.path == "/jwks":
                    self._json(200, fake._jwks)
                elif parts.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    back = {"code": secrets.token_urlsafe(12), "state": query.get("state", "")}
                    self.send_response(302)
                    self.send_header("Location", f"{query['redirect_uri']}?{urlencode(back)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                header = self.headers.get("Authorization", "")
                fake.token_requests.append({"authorization": header, "body": body})
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                elif fake.echo_credentials:
                    self._json(401, {"error": "invalid_client",
                                     "error_description": f"bad client: header={header} body={body}"})
                else:
                    self._json(200, fake._token())

        return Handler
