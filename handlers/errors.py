"""The one global error handler: any failure becomes a short ephemeral message with an error id.

Slack never sees a non-200 from us for a request that reached a listener, so users never get Slack's
"dispatch_failed" / "operation_timeout"; the id ties the message to the log line.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.response import BoltResponse

from bot.store import StateUnavailable
from handlers.blocks.answers import error_message, notice_message
from handlers.payloads import BadPayload

log = logging.getLogger(__name__)


def new_error_id() -> str:
    return secrets.token_hex(4)


def _json(payload: dict[str, Any]) -> BoltResponse:
    return BoltResponse(status=200, body=json.dumps(payload), headers={"content-type": "application/json"})


async def handle_error(
    error: Exception, body: dict[str, Any], response: BoltResponse | None, respond: Any
) -> BoltResponse | None:
    """Log with an error id; tell the user through the ack (not yet acked) or the response_url."""
    if isinstance(error, BoltUnhandledRequestError):
        if body.get("type") in ("event_callback", "url_verification") or body.get("event"):
            return BoltResponse(status=200, body="")  # an event we do not subscribe to: nothing to say
        message = notice_message("That button or command is no longer supported. Try `/itdr help`.")
        # `type` comes from the request body: never log more than a short prefix of it.
        log.warning("unhandled Slack request (type %.40r)", body.get("type") or "command")
    elif isinstance(error, BadPayload):
        message = notice_message("That button is out of date. Ask again with `/itdr`.")
        log.warning("bad button payload")
    elif isinstance(error, StateUnavailable):  # a decision was not recorded: say so, never pretend
        log.warning("state unavailable: could not %s", error.what)
        message = notice_message(str(error))
    else:
        error_id = new_error_id()
        log.error("listener failed [error id %s]: %s", error_id, type(error).__name__, exc_info=error)
        message = error_message(error_id)

    payload = message.to_response()
    if response is not None and body.get("command"):
        return _json(payload)  # not acked yet: the answer rides on the ack itself
    if respond is not None and (body.get("response_url") or body.get("response_urls")):
        try:
            await respond(**payload)
        except Exception as exc:  # Slack unreachable: the log line is all we can do
            log.warning("could not deliver the error message: %s", type(exc).__name__)
    if response is None:  # a failure after the ack (handlers/acking.py): the response_url was the only way
        return None
    return BoltResponse(status=200, body="")


def register(app: AsyncApp) -> None:
    app.error(handle_error)
