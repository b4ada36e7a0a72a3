"""Counts that agree with their nouns, for every layer's text ("1 item asked", "3 tenants", "in 1 wave")."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 tenant`, `3 tenants`; `plural` when adding an s is wrong."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
