"""The `app_home_opened` event."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from catalog import Catalog
from handlers.blocks.home import home_view


async def handle_app_home_opened(event: dict[str, Any], client: AsyncWebClient, catalog: Catalog) -> None:
    """Handles the Home tab opening: publish the catalog summary (the Messages tab needs nothing)."""
    if event.get("tab") != "home":
        return
    await client.views_publish(user_id=event["user"], view=home_view(catalog))
