"""Secrets at rest.

* Reversible secrets we must use later (mini-program AppSecrets, signing
  private keys) are sealed with AES-256-GCM under a key derived from
  ``PORTAL_SECRET_KEY``. The row they belong to is bound in as associated data,
  so a ciphertext copied into another pool's row does not decrypt.
* Secrets we only need to check (client secrets, ticket secrets) are random
  and 256 bits strong, so a keyed hash (HMAC-SHA256) is enough: a slow password
  hash would only slow the token endpoint down without making a guess likelier.
  Console passwords are chosen by people and get argon2id (see tenants.admins).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_LEN = 12


class DecryptError(Exception):
    """A sealed value did not open: wrong master key, wrong context or tampering."""


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"portal/v1", info=purpose).derive(
        secret_key.encode()
    )


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("a master secret key is required")
        self._aead = AESGCM(_derive(secret_key, b"aes-gcm at-rest encryption"))
        self._mac_key = _derive(secret_key, b"hmac secret hashing")
        # Keyed once: each hash copies this state instead of setting the key up again.
        self._mac = hmac.new(self._mac_key, digestmod=hashlib.sha256)

    def encrypt(self, plaintext: bytes | str, context: str) -> bytes:
        if isinstance(plaintext, str):
            plaintext = plaintext.encode()
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, sealed: bytes, context: str) -> bytes:
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_LEN + 16:
            raise DecryptError("not a sealed value of a known version")
        nonce, body = sealed[1 : 1 + _NONCE_LEN], sealed[1 + _NONCE_LEN :]
        try:
            return self._aead.decrypt(nonce, body, context.encode())
        except InvalidTag:
            raise DecryptError("sealed value failed authentication") from None

    def hash_secret(self, secret: str) -> str:
        mac = self._mac.copy()
        mac.update(secret.encode())
        return mac.hexdigest()

    def verify_secret(self, secret: str, expected_hash: str | None) -> bool:
        if not expected_hash:
            return False
        return hmac.compare_digest(self.hash_secret(secret), expected_hash)


def random_token(nbytes: int = 32) -> str:
    """URL-safe random text with ``nbytes`` of entropy."""
    return secrets.token_urlsafe(nbytes)
