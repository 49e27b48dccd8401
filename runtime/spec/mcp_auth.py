"""``auth: {oauth: ...}`` on an HTTP MCP server block: how the runtime gets the bearer
token the server asks for (OAuth 2.1 as the MCP authorization spec has it).

Three grants, each for a server-side runtime with nobody at a browser:

- ``client_credentials``: the runtime is the client (``client_secret_basic``,
  ``client_secret_post`` or ``private_key_jwt`` with a PEM key from ``${VAR}`` or a file);
- ``refresh_token``: a pre-registered client holding a refresh token a person granted
  once (from a secret, or the ``store`` file ``voice-runtime mcp-login`` writes);
- ``authorization_code``: a person logs in through a browser. Only ``mcp-login`` and
  ``call`` (a person at the terminal) run it; ``serve`` uses the store it leaves.

Secrets (client secret, private key, refresh token) are ``SecretStr``: redacted wherever
a spec's secrets are. The tokens issued at run time are redacted by ``mcp.oauth``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

Grant = Literal["client_credentials", "refresh_token", "authorization_code"]
TokenEndpointAuth = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OAuthClient(BaseModel):
    """An OAuth 2.1 client for one HTTP MCP server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grant: Grant | None = Field(
        None, description="client_credentials (the runtime is the client), refresh_token (a pre-registered client "
        "with a refresh token a person granted: `refresh_token` or `store`), authorization_code (a person logs in "
        "with `voice-runtime mcp-login`; serve then uses `store`). Default: refresh_token when `refresh_token` or "
        "`store` is given, else client_credentials.")
    client_id: str | None = Field(
        None, min_length=1, description="The pre-registered client id. Without it (authorization_code only) the "
        "client registers itself (dynamic registration) or uses `client_metadata_url`.")
    client_secret: SecretStr | None = Field(None, description="Use ${VAR}: never written in the file.")
    token_endpoint_auth: TokenEndpointAuth | None = Field(
        None, description="How the client authenticates at the token endpoint. Default: private_key_jwt with a "
        "key, client_secret_basic with a secret, else none (a public client).")
    private_key: SecretStr | None = Field(
        None, description="PEM private key signing the private_key_jwt assertion; use ${VAR}.")
    private_key_file: str | None = Field(
        None, min_length=1, description="A file holding that PEM key (relative to the spec), e.g. a mounted secret.")
    signing_algorithm: str = Field("RS256", description="JWS algorithm of the assertion (ES256 for an EC key).")
    refresh_token: SecretStr | None = Field(None, description="A refresh token a person granted; use ${VAR}.")
    store: str | None = Field(
        None, min_length=1, description="The file `voice-runtime mcp-login` writes (0600, relative to the spec): "
        "the client registration and the refresh token; rotated refresh tokens are written back to it.")
    scope: str | None = Field(
        None, min_length=1, description="Space-separated scopes to ask for. Default: the server's challenge "
        "(WWW-Authenticate), else its metadata's scopes_supported, else none.")
    issuer: str | None = Field(
        None, description="The authorization server's issuer URL: credentials are sent to no other, whatever the "
        "MCP server's metadata names. Default: the one the server's metadata names.")
    client_metadata_url: str | None = Field(
        None, description="authorization_code: an https URL of this client's metadata document, used as the "
        "client id where the authorization server supports it (CIMD) instead of registering.")
    redirect_port: int = Field(
        0, ge=0, le=65535, description="authorization_code: the 127.0.0.1 port of the login's redirect listener "
        "(a pre-registered client needs its registered one). Default: any free port.")
    refresh_before: float = Field(
        60.0, ge=0, le=3600, description="Seconds before an access token expires that a new one is fetched "
        "(at most a fifth of its lifetime), so no call meets an expired token.")

    @field_validator("issuer", "client_metadata_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise PydanticCustomError("url", "must be an http:// or https:// URL")
        return value

    @field_validator("signing_algorithm")
    @classmethod
    def _algorithm(cls, value: str) -> str:
        if value not in SIGNING_ALGORITHMS:
            raise PydanticCustomError("algorithm", "unknown JWS algorithm {value}; one of {known}",
                                      {"value": value, "known": ", ".join(SIGNING_ALGORITHMS)})
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OAuthClient:
        method = self.method
        if self.private_key is not None and self.private_key_file is not None:
            raise PydanticCustomError("oauth", "give `private_key` or `private_key_file`, not both")
        if method == "private_key_jwt" and self.private_key is None and self.private_key_file is None:
            raise PydanticCustomError("oauth", "private_key_jwt needs `private_key` (${VAR}) or `private_key_file`")
        if method in ("client_secret_basic", "client_secret_post") and self.client_secret is None:
            raise PydanticCustomError("oauth", "{method} needs `client_secret` (use ${{VAR}})", {"method": method})
        grant = self.resolved_grant
        if grant in ("client_credentials", "refresh_token") and self.client_id is None:
            raise PydanticCustomError("oauth", "{grant} needs `client_id` (a pre-registered client)",
                                      {"grant": grant})
        if grant == "refresh_token" and self.refresh_token is None and self.store is None:
            raise PydanticCustomError("oauth", "refresh_token needs `refresh_token` (${VAR}) or `store` "
                                      "(written by `voice-runtime mcp-login`)")
        if grant == "client_credentials" and method == "none":
            raise PydanticCustomError("oauth", "client_credentials needs a client secret or a private key")
        if grant == "authorization_code" and method == "private_key_jwt":
            raise PydanticCustomError("oauth", "authorization_code logins use a client secret or none; "
                                      "private_key_jwt is for client_credentials")
        return self

    @property
    def resolved_grant(self) -> Grant:
        if self.grant is not None:
            return self.grant
        return "refresh_token" if self.refresh_token is not None or self.store is not None else "client_credentials"

    @property
    def method(self) -> TokenEndpointAuth:
        if self.token_endpoint_auth is not None:
            return self.token_endpoint_auth
        if self.private_key is not None or self.private_key_file is not None:
            return "private_key_jwt"
        return "client_secret_basic" if self.client_secret is not None else "none"


class McpAuth(BaseModel):
    """How the runtime authenticates to an HTTP MCP server (besides static `headers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    oauth: OAuthClient = Field(description="OAuth 2.1: the runtime fetches, caches and refreshes the bearer token.")
