"""Buttons on the App Home tab: they republish the tab with the answer below the quick buttons."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.drift.service import DriftService
from catalog import Catalog
from handlers.blocks.answers import Surface
from handlers.blocks.home import home_view
from handlers.events.app_home_opened import fleet_summary
from handlers.payloads import AnswerRequest
from handlers.router import render


async def handle_home_show_action(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient, catalog: Catalog,
    drift: DriftService,
) -> None:
    """Handles a Home tab button (there is no response_url on Home: the answer goes into the view)."""
    await ack()
    request = AnswerRequest.from_value(action.get("value"))
    panel = render(catalog, request, surface=Surface.HOME)
    view = body.get("view") or {}
    view_blocks = home_view(catalog, panel, fleet=await fleet_summary(drift))
    await client.views_publish(user_id=body["user"]["id"], view=view_blocks, hash=view.get("hash"))
