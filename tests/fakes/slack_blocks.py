"""Slack's Block Kit limits as a checker the fake applies to everything it receives."""

from __future__ import annotations

from typing import Any

LIMITS = {
    "message_blocks": 50,
    "view_blocks": 100,
    "section_text": 3000,
    "section_fields": 10,
    "field_text": 2000,
    "header_text": 150,
    "actions_elements": 25,
    "context_elements": 10,
    "button_text": 75,
    "button_value": 2000,
    "id": 255,
    "fallback_text": 40000,
}


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def block_violations(blocks: list[dict[str, Any]], *, surface: str) -> list[str]:
    """Every broken limit in `blocks` for `surface` ("message", "home" or "modal"), as readable strings."""
    problems: list[str] = []
    limit = LIMITS["message_blocks"] if surface == "message" else LIMITS["view_blocks"]
    if len(blocks) > limit:
        problems.append(f"{len(blocks)} blocks in a {surface} (max {limit})")
    block_ids: set[str] = set()
    for n, block in enumerate(blocks):
        where = f"block {n} ({block.get('type')})"
        block_id = block.get("block_id")
        if block_id is not None:
            if len(block_id) > LIMITS["id"]:
                problems.append(f"{where}: block_id longer than 255")
            if block_id in block_ids:
                problems.append(f"{where}: duplicate block_id {block_id!r}")
            block_ids.add(block_id)
        kind = block.get("type")
        elements: list[dict[str, Any]] = []
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: section without text or fields")
            if _text_len(block.get("text")) > LIMITS["section_text"]:
                problems.append(f"{where}: section text {_text_len(block['text'])} chars (max 3000)")
            if _text_len(block.get("text")) == 0 and "text" in block:
                problems.append(f"{where}: empty section text")
            fields = block.get("fields") or []
            if len(fields) > LIMITS["section_fields"]:
                problems.append(f"{where}: {len(fields)} fields (max 10)")
            problems += [f"{where}: field over 2000 chars" for f in fields if _text_len(f) > LIMITS["field_text"]]
            if block.get("accessory"):
                elements.append(block["accessory"])
        elif kind == "header":
            if _text_len(block.get("text")) > LIMITS["header_text"]:
                problems.append(f"{where}: header over 150 chars")
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > LIMITS["actions_elements"]:
                problems.append(f"{where}: {len(elements)} elements (max 25)")
        elif kind == "context" and len(block.get("elements") or []) > LIMITS["context_elements"]:
            problems.append(f"{where}: more than 10 context elements")
        action_ids: set[str] = set()
        for element in elements:
            action_id = element.get("action_id")
            if action_id is not None:
                if len(action_id) > LIMITS["id"]:
                    problems.append(f"{where}: action_id longer than 255")
                if action_id in action_ids:
                    problems.append(f"{where}: duplicate action_id {action_id!r} in one block")
                action_ids.add(action_id)
            if element.get("type") == "button":
                if _text_len(element.get("text")) > LIMITS["button_text"]:
                    problems.append(f"{where}: button text over 75 chars")
                if len(element.get("value") or "") > LIMITS["button_value"]:
                    problems.append(f"{where}: button value over 2000 chars")
    return problems


def message_violations(payload: dict[str, Any]) -> list[str]:
    """Limits for a chat.* / response_url message, including the plain-text fallback rule."""
    problems: list[str] = []
    blocks = payload.get("blocks")
    if isinstance(blocks, str):
        import json

        blocks = json.loads(blocks)
    text = payload.get("text")
    if payload.get("delete_original"):
        return problems
    if not text or not str(text).strip():
        problems.append("message without a plain-text `text` fallback")
    elif len(str(text)) > LIMITS["fallback_text"]:
        problems.append("fallback text over 40000 chars")
    if blocks:
        problems += block_violations(blocks, surface="message")
    return problems


def view_violations(view: dict[str, Any]) -> list[str]:
    surface = view.get("type", "modal")
    return block_violations(view.get("blocks") or [], surface=surface)
