"""Webhooks signed with the mesh's ED25519 key and verified with its JWKS (node/trust/webhook_keys.py)."""

from __future__ import annotations

import base64
import email.message
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

import meshnode
from meshnode.trust.keyring import derive_key
from meshnode.trust.webhook_keys import (
    WebhookVerificationError,
    jwks,
    sign_webhook,
    verify_webhook,
    webhook_key,
)

TOKEN = "the token of this mesh, 32+ characters long"
OTHER_MESH = "the token of another mesh, 32+ characters"
NEW = "the next token of this mesh, 32+ characters"
JOB = "Zk3vQ0b4Rr2c8s9XyA_-1w"  # 22 characters, as job ids are
NOW = 1_750_000_000
BODY = b'{"id":"Zk3vQ0b4Rr2c8s9XyA_-1w","status":"completed"}'


def reason(headers: Any, body: bytes, document: Any, now_s: float = NOW) -> str:
    """The reason a webhook is refused (the test fails if it verifies)."""
    with pytest.raises(WebhookVerificationError) as refused:
        verify_webhook(headers, body, document, now_s=now_s)
    return refused.value.reason


def test_a_webhook_signed_on_one_node_verifies_with_the_jwks_of_another_node_of_the_mesh() -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    # Another node: a fresh derivation from the same token, the document as it crosses the wire.
    webhook_key.cache_clear()
    served = json.loads(json.dumps(jwks([TOKEN])))
    verify_webhook(headers, BODY, served, now_s=NOW + 10)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "webhook-key-id"}
    assert headers["webhook-id"] == JOB and headers["webhook-timestamp"] == str(NOW)


def test_the_signature_is_standard_webhooks_v1a_over_id_timestamp_and_body() -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    version, _, encoded = headers["webhook-signature"].partition(",")
    assert version == "v1a"
    (jwk,) = jwks([TOKEN])["keys"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    public.verify(base64.b64decode(encoded), f"{JOB}.{NOW}.".encode() + BODY)  # raises if not


def test_the_jwks_is_rfc_8037_with_a_short_stable_key_id() -> None:
    (jwk,) = jwks([TOKEN])["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
    assert len(jwk["x"]) == 43 and "=" not in jwk["x"]
    assert len(jwk["kid"]) == 16
    webhook_key.cache_clear()
    assert jwks([TOKEN])["keys"][0] == jwk  # derived again: the same key and id
    assert jwks([OTHER_MESH])["keys"][0]["kid"] != jwk["kid"]


def test_the_webhook_key_is_not_a_key_the_mesh_uses_for_anything_else() -> None:
    seed = webhook_key(TOKEN).private.private_bytes_raw()
    assert seed not in (derive_key(TOKEN, b"gossip aead"), derive_key(TOKEN, b"data plane psk"))
    assert TOKEN not in repr(webhook_key(TOKEN)) and seed.hex() not in repr(webhook_key(TOKEN))


def test_another_mesh_s_jwks_does_not_verify() -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    assert reason(headers, BODY, jwks([OTHER_MESH])) == "unknown_key"
    # Without the key id hint every published key is tried, and none verifies.
    anonymous = {name: value for name, value in headers.items() if name != "webhook-key-id"}
    assert reason(anonymous, BODY, jwks([OTHER_MESH])) == "bad_signature"
    verify_webhook(anonymous, BODY, jwks([TOKEN]), now_s=NOW)


@pytest.mark.parametrize(
    ("header", "value"),
    [("webhook-id", "Zk3vQ0b4Rr2c8s9XyA_-1x"), ("webhook-timestamp", str(NOW + 1))],
)
def test_a_changed_id_or_timestamp_does_not_verify(header: str, value: str) -> None:
    headers = {**sign_webhook([TOKEN], JOB, NOW, BODY), header: value}
    assert reason(headers, BODY, jwks([TOKEN])) == "bad_signature"


def test_a_changed_body_does_not_verify() -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    assert reason(headers, BODY + b" ", jwks([TOKEN])) == "bad_signature"
    assert reason(headers, BODY.replace(b"completed", b"failed"), jwks([TOKEN])) == "bad_signature"


@pytest.mark.parametrize(("offset_s", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_the_timestamp_must_be_within_the_window_both_ways(offset_s: int, ok: bool) -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    if ok:
        verify_webhook(headers, BODY, jwks([TOKEN]), now_s=NOW - offset_s)
    else:
        assert reason(headers, BODY, jwks([TOKEN]), now_s=NOW - offset_s) == "expired"


def test_during_a_rotation_both_keys_are_published_and_the_primary_signs() -> None:
    installed, switched = (TOKEN, NEW), (NEW, TOKEN)
    assert [key["kid"] for key in jwks(installed)["keys"]] == [webhook_key(TOKEN).kid, webhook_key(NEW).kid]
    assert sign_webhook(switched, JOB, NOW, BODY)["webhook-key-id"] == webhook_key(NEW).kid
    # A receiver holding the JWKS of either step verifies webhooks signed before and after the switch.
    for document in (jwks(installed), jwks(switched)):
        for ring in (installed, switched):
            verify_webhook(sign_webhook(ring, JOB, NOW, BODY), BODY, document, now_s=NOW)
    # One that kept only the old key meets an id it does not know: the cue to fetch the JWKS again.
    assert reason(sign_webhook(switched, JOB, NOW, BODY), BODY, jwks([TOKEN])) == "unknown_key"


def test_header_names_are_matched_in_any_case_as_http_servers_give_them() -> None:
    message = email.message.Message()  # what http.server's handler holds as self.headers
    for name, value in sign_webhook([TOKEN], JOB, NOW, BODY).items():
        message[name.title()] = value
    verify_webhook(message, BODY, jwks([TOKEN]), now_s=NOW)


def test_other_signature_schemes_in_the_list_are_skipped() -> None:
    headers = sign_webhook([TOKEN], JOB, NOW, BODY)
    headers["webhook-signature"] = f"v1,{base64.b64encode(b'x' * 32).decode()} {headers['webhook-signature']}"
    verify_webhook(headers, BODY, jwks([TOKEN]), now_s=NOW)


GOOD = sign_webhook([TOKEN], JOB, NOW, BODY)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {k: v for k, v in GOOD.items() if k != "webhook-signature"},
        {k: v for k, v in GOOD.items() if k != "webhook-timestamp"},
        {**GOOD, "webhook-id": "has.a.dot"},
        {**GOOD, "webhook-id": "x" * 129},
        {**GOOD, "webhook-timestamp": "-1"},
        {**GOOD, "webhook-timestamp": "1e9"},
        {**GOOD, "webhook-timestamp": "\u0661\u0667\u0665" * 3},  # Arabic-Indic digits: not ASCII ones
        {**GOOD, "webhook-timestamp": "9" * 13},
        {**GOOD, "webhook-signature": "v1a,not base64!"},
        {**GOOD, "webhook-signature": "v1a,é"},
        {**GOOD, "webhook-signature": "v1a," + base64.b64encode(b"short").decode()},
        {**GOOD, "webhook-signature": "v1,abc"},
        {**GOOD, "webhook-signature": " ".join([GOOD["webhook-signature"]] * 9)},
        {**GOOD, "webhook-signature": GOOD["webhook-signature"] + " " * 1024},
        {**GOOD, "webhook-key-id": "not a kid"},
        {**GOOD, "Webhook-Id": JOB},  # the same header twice
    ],
)
def test_malformed_headers_are_refused_as_malformed(headers: dict[str, str]) -> None:
    assert reason(headers, BODY, jwks([TOKEN])) == "malformed"


@pytest.mark.parametrize(
    "document",
    [
        {},
        [],
        {"keys": []},
        {"keys": "x"},
        {"keys": [{"kty": "RSA", "n": "...", "e": "AQAB", "kid": "r"}]},
        {"keys": [{**jwks([TOKEN])["keys"][0], "x": "short"}]},
        {"keys": [{**jwks([TOKEN])["keys"][0], "x": "!" * 43}]},
        {"keys": [{**jwks([TOKEN])["keys"][0], "kid": 7}]},
        {"keys": [jwks([TOKEN])["keys"][0]] * 17},
    ],
)
def test_a_bad_jwks_is_refused_as_bad_jwks(document: Any) -> None:
    assert reason(GOOD, BODY, document) == "bad_jwks"


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), st.text(max_size=200)), st.binary(max_size=64))
def test_no_forged_input_verifies_or_raises_anything_but_the_module_error(
    changes: dict[str, str], body: bytes
) -> None:
    headers = {**GOOD, **changes}
    if headers == GOOD and body == BODY:
        return
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, jwks([TOKEN]), now_s=NOW)


def test_sign_refuses_an_id_a_receiver_could_not_split() -> None:
    with pytest.raises(ValueError):
        sign_webhook([TOKEN], "a.b", NOW, BODY)
    with pytest.raises(ValueError):
        sign_webhook([TOKEN], JOB, -1, BODY)


def test_receivers_import_it_from_the_package() -> None:
    assert meshnode.verify_webhook is verify_webhook
    assert meshnode.WebhookVerificationError is WebhookVerificationError
