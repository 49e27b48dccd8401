"""The tokens an OAuth server issues at run time are secrets like a spec's: every
SecretSet redacts them (one made before they were issued too), the set of them stays
bounded in a long-running serve, and a server's auth state as check, tools and the
status page show it names the grant and expiry, never a token."""

from __future__ import annotations

from voice_runtime.mcp import oauth
from voice_runtime.spec.secrets import ISSUED, SecretSet


def test_a_token_issued_later_is_redacted_by_a_set_made_earlier_in_text_and_in_json() -> None:
    made_before = SecretSet({"spec-secret-value": "${CRM_SECRET}"})
    oauth.note_issued("eyJhbGciOi.access-token-7731", "refresh-token-55aa21")
    line = "sent Bearer eyJhbGciOi.access-token-7731 with spec-secret-value; refresh refresh-token-55aa21"
    assert made_before.redact(line) == "sent Bearer [oauth token] with ${CRM_SECRET}; refresh [oauth token]"
    assert "access-token-7731" not in made_before.dumps({"authorization": "Bearer eyJhbGciOi.access-token-7731"})
    assert SecretSet().redact("refresh-token-55aa21") == "[oauth token]"


def test_months_of_renewed_tokens_keep_only_the_latest_ones_in_the_redaction_set() -> None:
    for n in range(oauth.KEEP_ISSUED * 2):
        oauth.note_issued(f"renewed-token-{n:06d}-x")
    assert len(ISSUED._shown) <= oauth.KEEP_ISSUED
    assert SecretSet().redact(f"renewed-token-{oauth.KEEP_ISSUED * 2 - 1:06d}-x") == "[oauth token]"


def test_the_auth_state_shows_grant_and_expiry_and_why_there_is_no_token() -> None:
    now = 1_800_000_000.0
    held = oauth.TokenState("client_credentials", expires_at=now + 3540, token=True).as_dict()
    assert set(held) == {"kind", "grant", "token", "expires_at", "expires_in_s", "error"}
    assert oauth.describe_auth(held, now=now) == "oauth client_credentials, token expires 08:59:00 UTC (in 59 min)"
    soon = oauth.TokenState("refresh_token", expires_at=now + 30, token=True).as_dict()
    assert oauth.describe_auth(soon, now=now).endswith("(in 30 s)")
    refused = oauth.TokenState("refresh_token", error="the authorization server refused the refresh token").as_dict()
    assert oauth.describe_auth(refused) == "oauth refresh_token, no token: the authorization server refused the " \
                                           "refresh token"
    assert oauth.describe_auth(None) == "-"
