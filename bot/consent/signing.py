"""Signed tokens for consent: button values and the admin-consent `state`, so a forged or edited one is refused.

HMAC-SHA256 over the payload with a key from ITDR_STATE_SECRET, else derived from the Slack signing secret (or
the app-level token in Socket Mode); a per-process random key only when neither exists (the console).
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
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        if settings.itdr_state_secret is not None:
            return cls(settings.itdr_state_secret.get_secret_value().encode())
        base = settings.secret("slack_signing_secret") or settings.secret("slack_app_token")
        if not base:
            log.debug("no ITDR_STATE_SECRET or Slack secret: consent links are signed with a per-process key")
            return cls(secrets.token_bytes(32))
        # A derived key, so a leaked consent state never says anything about the Slack secret itself.
        return cls(hmac.new(base.encode(), b"itdr consent state v1", hashlib.sha256).digest())

    def _mac(self, purpose: str, payload: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\x1f{payload}".encode(), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])

    def sign(self, purpose: str, *parts: str) -> str:
        """`parts` joined with dots, then the MAC; parts must not contain dots."""
        if any(_SEPARATOR in part or not part for part in parts):
            raise ValueError("signed parts must be non-empty and contain no dots")
        payload = _SEPARATOR.join(parts)
        return f"{payload}{_SEPARATOR}{self._mac(purpose, payload)}"

    def verify(self, purpose: str, value: str | None, parts: int) -> tuple[str, ...]:
        """The parts of a value we signed for `purpose`; BadSignature otherwise."""
        pieces = (value or "").split(_SEPARATOR)
        if len(pieces) != parts + 1 or len(value or "") > 400:
            raise BadSignature("malformed signed value")
        payload = _SEPARATOR.join(pieces[:-1])
        if not hmac.compare_digest(self._mac(purpose, payload), pieces[-1]):
            raise BadSignature("signature mismatch")
        return tuple(pieces[:-1])
