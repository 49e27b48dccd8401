"""Every use of the mcp SDK's private parts, in one place: ``core/livekit_compat.py``'s
model, split off so that the ``mcp`` package imports no livekit code, even lazily.
Each function says what it relies on (mcp 2.3.0) and what it degrades to;
tests/unit/test_livekit_compat.py asserts each part still exists.
"""

from __future__ import annotations

from typing import Any


# -- the mcp SDK's stdio transport (mcp/client/stdio.py) --------------------------------


def stdio_text_stream() -> type:
    """The text stream class ``stdio_client`` reads a server's stdout through:
    ``mcp.client.stdio.TextReceiveStream`` (anyio's, imported into the SDK's module
    and looked up there at each connection)."""
    import mcp.client.stdio as sdk

    return sdk.TextReceiveStream  # type: ignore[no-any-return]


def set_stdio_text_stream(cls: type) -> None:
    """Make ``stdio_client`` read through ``cls``. Degrades to nothing when the SDK
    no longer reads through that name: a huge line is then read in quadratic time
    and without a size bound."""
    import mcp.client.stdio as sdk

    sdk.TextReceiveStream = cls  # type: ignore[misc,assignment]


def http_message_adapter() -> Any:
    """The adapter ``streamable_http_client`` parses each server message with:
    ``mcp.client.streamable_http.jsonrpc_message_adapter`` (imported into the SDK's
    module and looked up there at each message)."""
    import mcp.client.streamable_http as sdk

    return sdk.jsonrpc_message_adapter


def set_http_message_adapter(adapter: Any) -> None:
    """Make ``streamable_http_client`` parse through ``adapter``. Degrades to
    nothing when the SDK no longer looks the name up: a message nested too deep
    then fails its request with the parser's error instead of being read cut."""
    import mcp.client.streamable_http as sdk

    sdk.jsonrpc_message_adapter = adapter


# -- the mcp SDK's client session (mcp/client/session.py) --------------------------------


async def send_raw_request(session: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Send ``method`` and return the server's result unparsed. mcp 2.3.0's
    ``send_request`` checks a ``tools/call`` result against ``CallToolResult``, which
    refuses the ``CreateTaskResult`` a task-augmented call answers with (protocol
    2025-11-25), so the request goes through what ``send_request`` itself uses:
    ``ClientSession._stamp`` (the protocol headers) and
    ``ClientSession._dispatcher.send_raw_request``. No degraded form: a task-only tool
    fails its call with the AttributeError's sentence when these are gone."""
    data: dict[str, Any] = {"method": method, "params": params}
    opts: dict[str, Any] = {}
    session._stamp(data, opts)
    raw = await session._dispatcher.send_raw_request(method, data.get("params"), opts)
    return dict(raw)


# -- the mcp SDK's OAuth client (mcp/client/auth/) ---------------------------------------

# The steps of ``OAuthClientProvider``'s flow that ``mcp.oauth.provider_for`` overrides
# (the SDK's own client-credentials providers override the same ones), and the context
# methods it wraps. No degraded mode: without one of them OAuth servers cannot be used,
# which tests/unit/test_livekit_compat.py turns into a failing test at the upgrade.
OAUTH_PROVIDER_STEPS = ("_initialize", "_perform_authorization", "_refresh_token", "_handle_token_response",
                        "_handle_refresh_response", "_select_authorization_server", "_get_token_endpoint")
OAUTH_CONTEXT_STEPS = ("update_token_expiry", "can_refresh_token", "token_expiry_time", "current_tokens",
                       "client_metadata", "oauth_metadata")


def oauth_client_credentials_steps() -> Any:
    """The SDK's client-credentials pieces, reused by a provider that also does the
    refresh-token grant (mcp/client/auth/extensions/client_credentials.py):
    the request built with a client secret (``ClientCredentialsOAuthProvider``) or a
    signed assertion (``PrivateKeyJWTOAuthProvider``, which reads ``_assertion_provider``
    and ``_issuer`` on self), and the choice of the configured issuer among those a
    server advertises."""
    from types import SimpleNamespace

    from mcp.client.auth.extensions import client_credentials as sdk

    return SimpleNamespace(
        secret_request=sdk.ClientCredentialsOAuthProvider._exchange_token_client_credentials,
        jwt_request=sdk.PrivateKeyJWTOAuthProvider._exchange_token_client_credentials,
        add_jwt_assertion=sdk.PrivateKeyJWTOAuthProvider._add_client_authentication_jwt,
        preferred_server=sdk._preferred_authorization_server,
        SignedJWTParameters=sdk.SignedJWTParameters,
    )
