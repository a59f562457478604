"""Bearer tokens, activation codes and their stored forms."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.auth.tokens import (
    hash_secret,
    hash_token,
    new_activation_code,
    new_token,
    tokens_equal,
    verify_secret,
)

FAST = {"n": 2**4, "r": 1, "p": 1}  # cheap scrypt parameters for tests


def test_new_token_has_256_bits_url_safe() -> None:
    token = new_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert len({new_token() for _ in range(200)}) == 200


def test_hash_token_is_sha256_hex() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    token = new_token()
    assert hash_token(token) == hash_token(token) != hash_token(new_token())


def test_tokens_equal() -> None:
    token = new_token()
    assert tokens_equal(token, str(token))
    assert not tokens_equal(token, token[:-1])
    assert not tokens_equal(token, new_token())
    assert tokens_equal("é", "é")  # non-ASCII does not raise


def test_activation_code_shape() -> None:
    code = new_activation_code()
    assert re.fullmatch(r"[A-Za-z0-9]{28}", code)  # >= 20 chars, URL-safe, no leading '-'
    assert len({new_activation_code() for _ in range(200)}) == 200


def test_hash_secret_format_and_verify() -> None:
    code = new_activation_code()
    hashed = hash_secret(code)
    scheme, n, r, p, salt, digest = hashed.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**15), "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert verify_secret(code, hashed)
    assert not verify_secret(code + "x", hashed)
    assert hash_secret(code) != hashed  # random salt


def test_hash_secret_custom_parameters_are_self_describing() -> None:
    hashed = hash_secret("code", **FAST)
    assert hashed.startswith("scrypt$16$1$1$")
    assert verify_secret("code", hashed)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bcrypt$16$1$1$00$00",
        "scrypt$16$1$1$zz$" + "00" * 32,
        "scrypt$15$1$1$00$" + "00" * 32,  # n not a power of two
        f"scrypt${2**30}$8$1$00$" + "00" * 32,  # too expensive: never computed
        "scrypt$16$1$1$$" + "00" * 32,  # empty salt
        "scrypt$16$1$1$00$00",  # short hash
        "scrypt$16$1$1$00",
    ],
)
def test_malformed_hashes_never_verify(bad: str) -> None:
    assert verify_secret("code", bad) is False


def test_hash_secret_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        hash_secret("x", n=3)
    with pytest.raises(ValueError):
        hash_secret("x", n=2**4, r=0)


@settings(max_examples=25, deadline=None)
@given(code=st.text(max_size=40), other=st.text(max_size=40))
def test_property_verify_only_the_same_code(code: str, other: str) -> None:
    hashed = hash_secret(code, **FAST)
    assert verify_secret(code, hashed)
    assert verify_secret(other, hashed) == (other == code)
