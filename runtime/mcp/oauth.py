"""OAuth 2.1 for HTTP MCP servers: the mcp SDK's ``OAuthClientProvider`` (an httpx2
``Auth``: protected resource metadata from WWW-Authenticate or the well-known paths,
authorization server metadata and OIDC discovery with the 2025-03-26 fallbacks, scope
selection and 403 ``insufficient_scope`` step-up, dynamic registration, CIMD, PKCE),
driven by a spec's ``auth: {oauth: ...}`` (``spec.mcp_auth``).

What is ours on top of the SDK:

- one provider per connection, kept across its reconnects: its tokens are cached for the
  life of the process (serve's gateway holds the shared connections, so a shared block's
  token serves every call of every agent with that same block; a per-call block's token
  is that call's own);
- a token is renewed ``refresh_before`` its expiry (a client-credentials token too, by a
  new client-credentials request), not when the server first refuses it;
- the refresh-token grant without a person: the spec's (or the login store's) refresh
  token is redeemed at the token endpoint discovered from the server's metadata;
- a refused refresh token fails the connection with a reason that says what to do;
- every token issued is added to ``spec.secrets.ISSUED``: redacted from every log line,
  status page, report and trace like a spec's secrets;
- the interactive login (authorization code + PKCE through the browser and a redirect
  listener on 127.0.0.1) only where a person is at the terminal (``Login``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets as _random
import socket
import sys
import time
import webbrowser
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..spec.secrets import ISSUED, mask_tokens, reveal

if TYPE_CHECKING:
    import httpx2

    from ..spec.mcp_auth import OAuthClient
    from ..spec.models import HttpServer

log = logging.getLogger("voice_runtime.mcp")

TOKEN_LABEL = "[oauth token]"


class OAuthRefused(Exception):
    """The authorization server would not give a token; the message says what to do."""


# -- the interactive login ------------------------------------------------------


class Login:
    """A person logs in through a browser: the authorization URL is opened (and printed),
    the authorization server redirects to a listener on 127.0.0.1, which takes the code.
    Installed by the commands a person runs (``mcp-login``, ``call``); never by serve."""

    def __init__(self, port: int = 0, *, out: Any = None) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(4)
        self.redirect_uri = f"http://127.0.0.1:{self._socket.getsockname()[1]}/callback"
        self._out = out or sys.stderr
        self._result: asyncio.Future[dict[str, str]] | None = None
        self._server: asyncio.AbstractServer | None = None

    async def open(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        if self._server is None:
            self._server = await asyncio.start_server(self._answer, sock=self._socket)
        print(f"Log in to the MCP server's authorization server in your browser; if none opens, visit:\n  {url}",
              file=self._out, flush=True)
        # webbrowser waits for a BROWSER command to exit, and that command's redirect
        # lands on our listener, which needs this loop: in a thread
        await asyncio.to_thread(webbrowser.open, url)

    async def code(self) -> Any:
        from mcp.client.auth import AuthorizationCodeResult

        assert self._result is not None
        got = await asyncio.wait_for(self._result, timeout=600)
        if "error" in got:
            raise OAuthRefused(f"the authorization server refused the login: {got['error']}"
                               + (f" ({got['error_description']})" if got.get("error_description") else ""))
        return AuthorizationCodeResult(code=got.get("code", ""), state=got.get("state"), iss=got.get("iss"))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)).strip():
                pass  # the headers: nothing in them is needed
            target = line.split(" ")[1] if line.count(" ") >= 2 else "/"
            parts = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            done = parts.path == "/callback" and ("code" in query or "error" in query)
            body = ("Logged in; you can close this tab." if done and "code" in query
                    else "Login failed; see the terminal." if done else "Not the login callback.")
            writer.write(f"HTTP/1.1 {200 if done else 404} OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            await writer.drain()
            if done and self._result is not None and not self._result.done():
                self._result.set_result(query)
        except (OSError, asyncio.TimeoutError, IndexError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._socket.close()


_login_allowed = False
_fresh_login = False


def allow_login(allowed: bool = True, *, fresh: bool = False) -> None:
    """Let connections in this process ask a person to log in (a command a person runs);
    ``fresh``: log in even when the store holds a refresh token (``mcp-login``)."""
    global _login_allowed, _fresh_login
    _login_allowed, _fresh_login = allowed, fresh


def stored_refresh_token(store: Path) -> bool:
    """Whether a login store holds a refresh token (never the token itself)."""
    try:
        return bool(json.loads(store.read_text()).get("refresh_token"))
    except (OSError, ValueError, AttributeError):
        return False


class _NoTraceback(logging.Filter):
    """The SDK logs each failed OAuth flow with its traceback; the connection reports
    the reason itself (health, check, the log line of a server going down)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "OAuth flow error"


# -- tokens ---------------------------------------------------------------------


# the latest tokens are redacted; older ones have expired long before they drop out, and a
# serve renewing tokens for months must not grow the redaction pattern every log line pays
KEEP_ISSUED = 512
_issued: deque[str] = deque(maxlen=KEEP_ISSUED)


def note_issued(*values: str | None, label: str = TOKEN_LABEL) -> None:
    """Tokens never to be shown: redacted everywhere from now on (shown as ``label``)."""
    fresh = [v for v in values if v and v not in ISSUED]
    if not fresh:
        return
    full = len(_issued) + len(fresh) > KEEP_ISSUED
    _issued.extend(fresh)
    ISSUED.add({v: label for v in fresh})
    if full:
        ISSUED.retain(_issued)


@dataclass
class TokenState:
    """What status shows of a server's OAuth: never a token."""

    grant: str
    expires_at: float | None = None  # wall clock
    token: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "oauth", "grant": self.grant, "token": "held" if self.token else "none",
                "expires_at": None if self.expires_at is None else round(self.expires_at),
                "expires_in_s": None if self.expires_at is None else max(0, round(self.expires_at - time.time())),
                "error": self.error}


class TokenCache:
    """The SDK's ``TokenStorage``: tokens in memory, the client registration and the
    refresh token also in the login store (0600) when the spec names one."""

    def __init__(self, store: Path | None, state: TokenState) -> None:
        self.store = store
        self.state = state
        self.tokens: Any = None
        self.client_info: Any = None
        self.refresh_token: str | None = None
        self._seen: float | None = None  # the store's mtime when last read or written
        if store is not None and store.exists():
            self._load(store)

    def latest_refresh_token(self) -> str | None:
        """The refresh token to redeem now: re-read from the store when another process
        (a second serve, `call`, a new `mcp-login`) wrote it since, since redeeming the
        one it rotated away would be refused."""
        if self.store is not None and not _fresh_login:
            try:
                changed = self.store.stat().st_mtime != self._seen
            except OSError:
                changed = False
            if changed:
                self._load(self.store)
        return self.refresh_token

    def _load(self, store: Path) -> None:
        from mcp.shared.auth import OAuthClientInformationFull

        try:
            self._seen = store.stat().st_mtime
            data = json.loads(store.read_text())
            if data.get("client"):
                self.client_info = OAuthClientInformationFull.model_validate(data["client"])
            self.refresh_token = None if _fresh_login else data.get("refresh_token") or None
        except (OSError, ValueError) as exc:
            raise OAuthRefused(f"the login store {store} cannot be read ({type(exc).__name__}); "
                               "run `voice-runtime mcp-login` again") from None
        note_issued(self.refresh_token, getattr(self.client_info, "client_secret", None))

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        note_issued(tokens.access_token, tokens.refresh_token)
        self.tokens = tokens
        self.state.token = bool(tokens.access_token)
        self.state.expires_at = None if tokens.expires_in is None else time.time() + int(tokens.expires_in)
        self.state.error = None
        if tokens.refresh_token and tokens.refresh_token != self.refresh_token:
            if self.refresh_token is not None and self.store is None:
                log.warning("the authorization server rotated the refresh token; without `store` the new one lives "
                            "only in this process, and a restart redeems the old one from the spec")
            self.refresh_token = tokens.refresh_token
            self.save()

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        note_issued(client_info.client_secret)
        self.client_info = client_info
        self.save()

    def save(self) -> None:
        """Write the store (rotated refresh tokens must survive a restart): 0600 from
        the start, replaced atomically."""
        if self.store is None:
            return
        data = {"client": None if self.client_info is None else self.client_info.model_dump(mode="json",
                                                                                              exclude_none=True),
                "refresh_token": self.refresh_token, "saved_at": round(time.time())}
        temp = self.store.with_name(f".{self.store.name}.{os.getpid()}.tmp")
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(temp, self.store)
            self._seen = self.store.stat().st_mtime
        except OSError as exc:
            log.warning("the OAuth login store %s cannot be written (%s); a rotated refresh token lives only "
                        "in this process", self.store, exc.strerror or exc)
            with contextlib.suppress(OSError):
                temp.unlink()


# -- the provider -----------------------------------------------------------------


def _sdk() -> Any:
    """The SDK's provider class and its client-credentials steps (``compat``), imported
    when the first OAuth server connects."""
    from mcp.client.auth import OAuthClientProvider

    from .compat import oauth_client_credentials_steps

    return OAuthClientProvider, oauth_client_credentials_steps()


def _private_key(config: OAuthClient, base_dir: Path) -> str | None:
    if config.private_key is not None:
        return reveal(config.private_key)
    if config.private_key_file is None:
        return None
    path = Path(config.private_key_file)
    path = path if path.is_absolute() else base_dir / path
    try:
        key = path.read_text()
    except OSError as exc:
        raise OAuthRefused(f"the private key file {path} cannot be read: {exc.strerror or exc}") from None
    note_issued(key.strip())
    return key


def provider_for(name: str, server: HttpServer, base_dir: Path) -> httpx2.Auth:
    """The ``auth=`` of the server's HTTP client; made once per connection."""
    OAuthClientProvider, cc = _sdk()
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

    sdk_log = logging.getLogger("mcp.client.auth.oauth2")
    if not any(isinstance(f, _NoTraceback) for f in sdk_log.filters):
        sdk_log.addFilter(_NoTraceback())

    assert server.auth is not None
    config = server.auth.oauth
    grant = config.resolved_grant
    method = config.method
    state = TokenState(grant)
    store = None
    if config.store is not None:
        store = Path(config.store) if Path(config.store).is_absolute() else base_dir / config.store
    cache = TokenCache(store, state)
    if config.refresh_token is not None:
        cache.refresh_token = reveal(config.refresh_token)
    secret = reveal(config.client_secret) if config.client_secret is not None else None
    login = Login(config.redirect_port) if grant == "authorization_code" and _login_allowed else None
    redirect = [login.redirect_uri] if login is not None else ["http://127.0.0.1/callback"]
    fixed = None
    if config.client_id is not None:
        fixed = OAuthClientInformationFull(
            client_id=config.client_id, client_secret=secret, redirect_uris=redirect,
            token_endpoint_auth_method=method, scope=config.scope,
            grant_types=["client_credentials"] if grant == "client_credentials"
            else ["authorization_code", "refresh_token"])
    key = _private_key(config, base_dir) if method == "private_key_jwt" else None
    if config.issuer is None and (secret is not None or key is not None):
        log.warning("MCP server %s: its client credentials go to whichever authorization server the server's "
                    "metadata names; set auth.oauth.issuer to send them to that one only", name)

    class Provider(OAuthClientProvider):  # type: ignore[misc, valid-type]
        """The SDK's flow with our grants; see the module docstring."""

        def __init__(self) -> None:
            metadata = OAuthClientMetadata(
                client_name="voice-runtime", redirect_uris=redirect, scope=config.scope,
                grant_types=["client_credentials"] if grant == "client_credentials"
                else ["authorization_code", "refresh_token"],
                response_types=["code"], token_endpoint_auth_method=method)
            super().__init__(server.url, metadata, cache,
                             login.open if login is not None else None, login.code if login is not None else None,
                             client_metadata_url=config.client_metadata_url if login is not None else None)
            self._issuer = config.issuer
            self._found_endpoint = False  # discovery ran: the token endpoint is known
            if key is not None:
                self._assertion_provider = cc.SignedJWTParameters(
                    issuer=config.client_id, subject=config.client_id, signing_key=key,
                    signing_algorithm=config.signing_algorithm).create_assertion_provider()
            # renew before expiry: the SDK's expiry is the token's last second
            margin_of = self.context.update_token_expiry

            def update_expiry(token: Any) -> None:
                margin_of(token)
                if self.context.token_expiry_time is not None and token.expires_in:
                    self.context.token_expiry_time -= min(config.refresh_before, int(token.expires_in) / 5)

            self.context.update_token_expiry = update_expiry  # type: ignore[method-assign]
            self.context.can_refresh_token = self._can_renew  # type: ignore[method-assign]

        async def _initialize(self) -> None:
            self.context.current_tokens = await cache.get_tokens()
            self.context.client_info = fixed or await cache.get_client_info()
            self._initialized = True

        def _select_authorization_server(self, advertised: list[str]) -> str:
            return cc.preferred_server(advertised, self._issuer)

        def _can_renew(self) -> bool:
            if not self._found_endpoint or self.context.client_info is None:
                return False  # before discovery the SDK would guess the token endpoint
            return grant == "client_credentials" or bool(cache.refresh_token)

        async def _refresh_token(self) -> Any:
            if grant == "client_credentials":
                return await self._client_credentials()
            self._hold_refresh_token()
            return await super()._refresh_token()

        async def _handle_refresh_response(self, response: Any) -> bool:
            renewed = await super()._handle_refresh_response(response)
            if not renewed:
                state.token = False
            return renewed

        def _hold_refresh_token(self) -> None:
            from mcp.shared.auth import OAuthToken

            latest = cache.latest_refresh_token()
            current = self.context.current_tokens
            if current is None or not current.refresh_token or current.refresh_token != latest:
                self.context.current_tokens = OAuthToken(access_token="", refresh_token=latest,
                                                         scope=current.scope if current is not None else config.scope)

        # the SDK's private_key_jwt assertion (audience: the discovered issuer)
        _add_client_authentication_jwt = cc.add_jwt_assertion

        async def _client_credentials(self) -> Any:
            return await (cc.jwt_request if key is not None else cc.secret_request)(self)

        async def _perform_authorization(self) -> Any:
            self._found_endpoint = True
            if grant == "client_credentials":
                return await self._client_credentials()
            if cache.refresh_token and not (login is not None and self._wider_scope()):
                self._hold_refresh_token()
                self._redeeming = True
                return await super()._refresh_token()
            if login is None:
                raise OAuthRefused(
                    f"MCP server {name} needs a person to log in (authorization_code): run `voice-runtime "
                    f"mcp-login DIR --agent AGENT --server {name}` and give the spec its `store`")
            self._redeeming = False
            return await super()._perform_authorization()

        _redeeming = False

        def _wider_scope(self) -> bool:
            """A scope beyond what the refresh token was granted (a step-up): a refresh
            cannot widen a grant, so a person logs in again."""
            wanted = set((self.context.client_metadata.scope or "").split())
            current = self.context.current_tokens
            granted = set(((current.scope if current is not None else None) or config.scope or "").split())
            return bool(wanted - granted)

        async def _handle_token_response(self, response: Any) -> None:
            redeeming, self._redeeming = self._redeeming, False
            if response.status_code in (200, 201):
                await super()._handle_token_response(response)
                return
            body = (await response.aread()).decode("utf-8", "replace")
            try:
                error = json.loads(body)
                why = str(error.get("error", "")) + (f": {error['error_description']}"
                                                    if error.get("error_description") else "")
            except (ValueError, AttributeError):
                why = f"HTTP {response.status_code}"
            # the authorization server's words: credentials it echoes back (our own Basic header,
            # a token) masked whatever their encoding, and bounded before they reach logs and /status
            why = mask_tokens(why, "[credentials]")[:300]
            what = "the refresh token" if redeeming else "the client's credentials" \
                if grant == "client_credentials" else "the login"
            advice = "; log in again with `voice-runtime mcp-login`" if redeeming else ""
            state.error = f"the authorization server refused {what} ({why or response.status_code}){advice}"
            state.token = False
            raise OAuthRefused(state.error)

    provider = Provider()
    provider.token_state = state  # type: ignore[attr-defined]
    provider.login = login  # type: ignore[attr-defined]
    return provider


def close(auth: Any) -> None:
    """Stop a provider's login listener, if it has one."""
    login = getattr(auth, "login", None)
    if login is not None:
        login.close()


def token_state(auth: Any) -> dict[str, Any] | None:
    state = getattr(auth, "token_state", None)
    return None if state is None else state.as_dict()


def refusal(auth: Any) -> str | None:
    """Why the authorization server refused this provider a token, while it holds none."""
    state = getattr(auth, "token_state", None)
    return None if state is None or state.token or not state.error else f"OAuthRefused: {state.error}"


def describe_auth(auth: dict[str, Any] | None, *, now: float | None = None) -> str:
    """A server's auth state in a few words, for check, tools and the status page:
    ``oauth client_credentials, token expires 15:40:12 UTC (in 59 min)``; never a token."""
    if not auth:
        return "-"
    text = f"oauth {auth['grant']}"
    if auth.get("token") != "held":
        return text + (f", no token: {auth['error']}" if auth.get("error") else ", no token yet")
    expires = auth.get("expires_at")
    if expires is None:
        return text + ", token without expiry"
    left = max(0, expires - (time.time() if now is None else now))
    clock = time.strftime("%H:%M:%S UTC", time.gmtime(expires))
    return text + f", token expires {clock} (in {left / 60:.0f} min)" if left >= 120 else \
        text + f", token expires {clock} (in {left:.0f} s)"
