"""Passkey ceremonies (CONTRACT §14) with py_webauthn: the options, and the verification of what
the browser's ``navigator.credentials`` answered. Pure: no connection, no commit.

- Creation options require a resident (discoverable) key, prefer user verification, ask for no
  attestation (``none`` is accepted; whatever a browser sends instead is verified as it is) and
  carry the account's id (16 bytes) as the user handle; the account's passkeys are excluded.
- Request options name no credential: the authenticator offers the discoverable ones it holds.
- A response is verified against its challenge, ``ANONID_WEBAUTHN_RP_ID`` and the origins of
  ``ANONID_WEBAUTHN_ORIGINS``; an assertion also against the stored public key and signature
  counter (one that does not move past the stored count is refused: a cloned authenticator),
  and its user handle against the passkey's owner. Anything a client sent that py_webauthn cannot
  parse or verify is ``invalid_passkey`` (adding) or ``invalid_credentials`` (signing in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    byteslike_to_bytes,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from app.credentials.webauthn_challenges import CHALLENGE_TTL
from app.errors import N_, AnonidError
from app.settings import Settings

log = logging.getLogger("anonid.passkeys")

TIMEOUT_MS = int(CHALLENGE_TTL.total_seconds() * 1000)
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
MAX_CREDENTIAL_ID_BYTES = 1023  # WebAuthn L3: at most 1023 bytes
PASSKEY_REFUSED = N_("The passkey could not be verified.")


@dataclass(frozen=True, slots=True)
class NewPasskey:
    """A verified ``navigator.credentials.create()`` answer, ready to store."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    backed_up: bool


@dataclass(frozen=True, slots=True)
class Assertion:
    """A parsed ``navigator.credentials.get()`` answer, not yet verified."""

    credential: AuthenticationCredential
    challenge: bytes

    @property
    def credential_id(self) -> bytes:
        return self.credential.raw_id

    @property
    def user_handle(self) -> bytes | None:
        return self.credential.response.user_handle


@dataclass(frozen=True, slots=True)
class Attestation:
    """A parsed ``navigator.credentials.create()`` answer, not yet verified."""

    credential: RegistrationCredential
    challenge: bytes


def account_label(settings: Settings, user_id: UUID, email: str | None) -> str:
    """What the authenticator shows for the account: its address, else the service and a short
    part of the id (two accounts on one device stay apart)."""
    return email or f"{settings.rp_name} ({user_id.hex[-6:]})"


def creation_options(
    settings: Settings,
    user_id: UUID,
    email: str | None,
    challenge: bytes,
    existing: list[bytes],
) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptionsJSON`` for the account."""
    label = account_label(settings, user_id, email)
    options = generate_registration_options(
        rp_id=settings.rp_id,
        rp_name=settings.rp_name,
        user_id=user_id.bytes,
        user_name=label,
        user_display_name=label,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
        supported_pub_key_algs=ALGORITHMS,
    )
    body = options_to_json_dict(options)
    body["extensions"] = {"credProps": True}
    return body


def request_options(settings: Settings, challenge: bytes) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptionsJSON`` for discoverable credentials."""
    options = generate_authentication_options(
        rp_id=settings.rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json_dict(options)


def _challenge_of(client_data_json: Any) -> bytes:
    return parse_client_data_json(byteslike_to_bytes(client_data_json)).challenge


def parse_attestation(credential: Any) -> Attestation:
    """The answer of ``create()`` (``PublicKeyCredential.toJSON()``) and its challenge."""
    try:
        parsed = parse_registration_credential_json(credential)
        return Attestation(parsed, _challenge_of(parsed.response.client_data_json))
    except Exception as exc:  # a client's bytes: anything unparseable is a refusal, never a 5xx
        log.info("unparseable passkey registration: %s", exc)
        raise AnonidError("invalid_passkey") from None


def verify_attestation(settings: Settings, attestation: Attestation) -> NewPasskey:
    """The new passkey, once the answer verifies against its challenge, RP id and origins."""
    try:
        verified = verify_registration_response(
            credential=attestation.credential,
            expected_challenge=attestation.challenge,
            expected_rp_id=settings.rp_id,
            expected_origin=settings.webauthn_origin_list,
            supported_pub_key_algs=ALGORITHMS,
        )
    except Exception as exc:  # InvalidRegistrationResponse, or hostile CBOR the parser rejects
        log.info("passkey registration refused: %s", exc)
        raise AnonidError("invalid_passkey") from None
    if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES:
        raise AnonidError("invalid_passkey")
    return NewPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up
        or verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
    )


def parse_assertion(credential: Any) -> Assertion:
    """The answer of ``get()`` (``PublicKeyCredential.toJSON()``) and its challenge."""
    try:
        parsed = parse_authentication_credential_json(credential)
        return Assertion(parsed, _challenge_of(parsed.response.client_data_json))
    except Exception as exc:  # a client's bytes: anything unparseable is a refusal, never a 5xx
        log.info("unparseable passkey assertion: %s", exc)
        raise AnonidError("invalid_credentials", PASSKEY_REFUSED) from None


def verify_assertion(
    settings: Settings,
    assertion: Assertion,
    *,
    owner: UUID,
    public_key: bytes,
    sign_count: int,
) -> int:
    """The authenticator's new signature count, once the assertion verifies against its
    challenge, RP id, origins, the stored key and count, and names ``owner`` as its user."""
    handle = assertion.user_handle
    if handle is not None and handle != owner.bytes:
        log.info("passkey assertion refused: the user handle is not the passkey's owner")
        raise AnonidError("invalid_credentials", PASSKEY_REFUSED)
    try:
        verified = verify_authentication_response(
            credential=assertion.credential,
            expected_challenge=assertion.challenge,
            expected_rp_id=settings.rp_id,
            expected_origin=settings.webauthn_origin_list,
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
        )
    except Exception as exc:  # InvalidAuthenticationResponse, or bytes the parser rejects
        log.info("passkey assertion refused: %s", exc)
        raise AnonidError("invalid_credentials", PASSKEY_REFUSED) from None
    return verified.new_sign_count
