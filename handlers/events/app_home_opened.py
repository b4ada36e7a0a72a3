"""The `app_home_opened` event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.drift.service import DriftService
from bot.store import StateUnavailable
from catalog import Catalog
from handlers.blocks.answers import notice_message
from handlers.blocks.drift import fleet_message
from handlers.blocks.home import home_view
from handlers.blocks.kit import Message


async def fleet_summary(drift: DriftService) -> Message | None:
    """The fleet at a glance for the Home tab; a note when it cannot be read, nothing when nothing is watched."""
    try:
        fleet = await drift.fleet_summary(datetime.now(UTC))
    except StateUnavailable:
        return notice_message("The fleet summary cannot be read right now (Redis is unreachable).")
    return fleet_message(fleet) if fleet.tenants else None


async def handle_app_home_opened(
    event: dict[str, Any], client: AsyncWebClient, catalog: Catalog, drift: DriftService
) -> None:
    """Handles the Home tab opening: publish the catalog and fleet summary (the Messages tab needs nothing)."""
    if event.get("tab") != "home":
        return
    await client.views_publish(user_id=event["user"], view=home_view(catalog, fleet=await fleet_summary(drift)))
