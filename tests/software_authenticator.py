"""A WebAuthn authenticator and client in Python, for the HTTP tests of passkeys.

It does what a browser and a platform authenticator do together, byte for byte as WebAuthn
defines it: ``clientDataJSON`` with the page's origin and the challenge, authenticator data
with the RP id's SHA-256, the flags and the signature counter, a ``none`` attestation carrying a
P-256 COSE key, and ES256 signatures over ``authenticatorData || SHA-256(clientDataJSON)``. Its
answers are ``PublicKeyCredential.toJSON()``. Every knob a test needs to forge a refusal is a
parameter (origin, RP id, counter, user handle, flags). The browser tests
(``tests/test_passkeys_browser.py``) use Chromium's own virtual authenticator instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftwareAuthenticator:
    """Discoverable credentials on a software authenticator, used from ``origin``.

    ``counts``: whether it keeps a signature counter (synced passkeys often send 0)."""

    origin: str
    counts: bool = True
    credentials: list[Credential] = field(default_factory=list)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        body = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps({**body, "crossOrigin": False}, separators=(",", ":")).encode()

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """The answer of ``navigator.credentials.create()`` to creation options (JSON); a new
        key pair, under ``credential_id`` when given."""
        key = ec.generate_private_key(ec.SECP256R1())
        credential = Credential(
            credential_id=credential_id or secrets.token_bytes(32),
            key=key,
            rp_id=rp_id or options["rp"]["id"],
            user_handle=unb64url(options["user"]["id"]),
        )
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = (
            bytes(16)  # AAGUID: none
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + cose
        )
        auth_data = self._auth_data(credential.rp_id, UP | UV | AT, 0) + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        self.credentials.append(credential)
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {"credProps": {"rk": True}},
        }

    def _auth_data(self, rp_id: str, flags: int, count: int) -> bytes:
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", count)

    def get(
        self,
        options: dict[str, Any],
        *,
        credential: Credential | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
        flags: int = UP | UV,
    ) -> dict[str, Any]:
        """The answer of ``navigator.credentials.get()`` to request options (JSON), signed with
        ``credential`` (default: the newest); the counter moves on unless ``sign_count`` says."""
        chosen = credential or self.credentials[-1]
        if sign_count is None:
            chosen.sign_count = chosen.sign_count + 1 if self.counts else 0
            sign_count = chosen.sign_count
        auth_data = self._auth_data(rp_id or options.get("rpId") or chosen.rp_id, flags, sign_count)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = chosen.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(chosen.credential_id),
            "rawId": b64url(chosen.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(user_handle or chosen.user_handle),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }
