"""Posting and updating consent cards in a channel (Web API calls, no Bolt): used by the listeners, the
admin-consent callback page and the worker."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.consent.model import ConsentRequest
from bot.consent.service import Attempt, ConsentService
from handlers.blocks.answers import notice_message
from handlers.blocks.consent import card

log = logging.getLogger(__name__)

#: Slack errors that mean the bot cannot post in the channel, and what to tell the person who asked.
NOT_IN_CHANNEL = {
    "not_in_channel": "I am not in this channel: invite me with `/invite @itdr`, then ask again.",
    "channel_not_found": "I cannot see this channel (a private channel or a DM): invite me with `/invite @itdr` "
                         "or ask in a channel I am in.",
    "is_archived": "This channel is archived.",
}


class CannotPost(Exception):
    """The card could not be posted; str(exc) says why in words for the requester."""


def render(service: ConsentService, request: ConsentRequest) -> tuple[str, list[dict[str, object]]]:
    message = card(request, service.catalog, value=service.button_value(request),
                   consent_url=service.consent_url(request))
    return message.text, message.blocks


async def post_card(client: AsyncWebClient, service: ConsentService, request: ConsentRequest) -> str:
    """Post the card in the request's channel; its message ts. Raises CannotPost."""
    text, blocks = render(service, request)
    try:
        response = await client.chat_postMessage(channel=request.channel, text=text, blocks=blocks)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        raise CannotPost(NOT_IN_CHANNEL.get(error, f"Slack refused the message ({error or 'error'}).")) from None
    return str(response["ts"])


async def update_card(client: AsyncWebClient, service: ConsentService, request: ConsentRequest) -> None:
    """Show the request's current state on its card. The state is already recorded: a card Slack refuses to update
    (deleted message, removed bot) is logged, and the next change tries again."""
    if request.message_ts is None:
        return
    text, blocks = render(service, request)
    try:
        await client.chat_update(channel=request.channel, ts=request.message_ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.warning("could not update the consent card of request %s: %s", request.id,
                    exc.response.get("error"))


async def tell_unfinished(attempt: Attempt, *, taken_over: bool, session: aiohttp.ClientSession | None = None) -> None:
    """Replace the "Preparing…" message of an attempt lost with its server, so its user knows where things stand."""
    ask = f"/itdr consent {attempt.tenant} {attempt.version}"
    text = (f"This attempt to prepare the consent request for {attempt.tenant} ({attempt.version}) did not finish: "
            "the bot stopped mid-way. " + ("A newer attempt took over; its answer follows." if taken_over else
                                           f"Ask again with `{ask}`."))
    try:
        await AsyncWebhookClient(url=attempt.response_url, session=session).send_dict(
            notice_message(text).to_response(replace_original=True))
    except (aiohttp.ClientError, TimeoutError) as exc:  # the user may still ask again: worth a line, not a failure
        log.info("could not tell an unfinished consent attempt (%s)", type(exc).__name__)
