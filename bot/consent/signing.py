"""Signed tokens for consent: button values and the admin-consent `state`, so a forged or edited one is refused.

HMAC-SHA256 over the payload with ITDR_STATE_SECRET, the one key every process shares (`Settings.require` refuses
to start serve, socket or worker with consent configured and no key). Values signed with
ITDR_STATE_SECRET_PREVIOUS still verify after a rotation. Without any key (the console, the CLI, a bot without
approvers) a per-process random key signs: nothing signed there outlives the process that checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

from bot.settings import Settings

log = logging.getLogger(__name__)

_SEPARATOR = "."
_MAC_BYTES = 16


class BadSignature(ValueError):
    """A value that was not signed by us, or was edited."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer:
    def __init__(self, key: bytes, *, previous: bytes | None = None) -> None:
        self._key = key
        self._previous = previous

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        if settings.itdr_state_secret is None:
            log.debug("no ITDR_STATE_SECRET: consent values are signed with a per-process key")
            return cls(secrets.token_bytes(32))
        previous = settings.itdr_state_secret_previous
        return cls(settings.itdr_state_secret.get_secret_value().encode(),
                   previous=previous.get_secret_value().encode() if previous is not None else None)

    @staticmethod
    def _mac(key: bytes, purpose: str, payload: str) -> str:
        digest = hmac.new(key, f"{purpose}\x1f{payload}".encode(), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])

    def sign(self, purpose: str, *parts: str) -> str:
        """`parts` joined with dots, then the MAC; parts must not contain dots."""
        if any(_SEPARATOR in part or not part for part in parts):
            raise ValueError("signed parts must be non-empty and contain no dots")
        payload = _SEPARATOR.join(parts)
        return f"{payload}{_SEPARATOR}{self._mac(self._key, purpose, payload)}"

    def verify(self, purpose: str, value: str | None, parts: int | tuple[int, ...]) -> tuple[str, ...]:
        """The parts of a value we signed for `purpose` (one of the `parts` counts); BadSignature otherwise."""
        pieces = (value or "").split(_SEPARATOR)
        counts = (parts,) if isinstance(parts, int) else parts
        if len(pieces) - 1 not in counts or len(value or "") > 400:
            raise BadSignature("malformed signed value")
        payload = _SEPARATOR.join(pieces[:-1])
        keys = (self._key,) if self._previous is None else (self._key, self._previous)
        if not any(hmac.compare_digest(self._mac(key, purpose, payload), pieces[-1]) for key in keys):
            raise BadSignature("signature mismatch")
        return tuple(pieces[:-1])
