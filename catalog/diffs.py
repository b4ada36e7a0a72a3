"""A diff laid out to be read in one look: removed items first, then added ones, each side grouped by purpose.

Pure logic over `Diff`. Slack's `diff_message` and the terminal's `render_diff` both render a `DiffLayout`, so the
two surfaces group, order and summarise a diff the same way; only the markup differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from catalog.models import Diff, Item, Status

# The flags an item can carry that a reader must see, in the order they are shown.
FUTURE, CPV_ONLY, P2_ONLY = "future use", "CPV only", "Entra ID P2 only"

# The vendor's purpose text often says a flag itself ("(Future Use) ISPM", "(CPV Integrations Only) …",
# "(Entra ID P2 Licenses only)"); a flag the text already states is not repeated.
_STATED = {
    FUTURE: re.compile(r"\(future", re.IGNORECASE),
    CPV_ONLY: re.compile(r"\bCPV\b", re.IGNORECASE),
    P2_ONLY: re.compile(r"\bP2\b", re.IGNORECASE),
}

# The first word of a name: "Device" in DeviceManagementApps.ReadWrite.All, "RBAC" in RBACRole, "user" in
# user_impersonation. Names sharing it are summarised by one pattern.
_FIRST_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z]+|.")


def item_flags(item: Item) -> tuple[str, ...]:
    """What an item's name and purpose alone do not tell: future use, CPV only, Entra ID P2 only."""
    flags = []
    if item.status is Status.future:
        flags.append(FUTURE)
    if item.cpv_only:
        flags.append(CPV_ONLY)
    if item.p2_only:
        flags.append(P2_ONLY)
    return tuple(flags)


@dataclass(frozen=True)
class NameSummary:
    """A compact stand-in for many names: up to a few glob patterns (`Policy.ReadWrite.*`) and how many names
    no pattern covers. Patterns always hold a `*`, so a summary never repeats a name in full."""

    patterns: tuple[str, ...]
    others: int

    def format(self, quote: Callable[[str], str] = str) -> str:
        """Reads "`A*`, `B.*` and 12 others" (`quote` marks up each pattern); "" when no pattern applies."""
        if not self.patterns:
            return ""
        parts = [quote(pattern) for pattern in self.patterns]
        if self.others:
            return ", ".join(parts) + f" and {self.others} other{'s' if self.others != 1 else ''}"
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def name_pattern(names: Sequence[str]) -> str:
    """One glob for names that share a start: their common prefix, `*`, and a common tail when it says more than
    `.All` (`Security*.ReadWrite.All`, `DeviceManagement*`, `Policy.ReadWrite.*`)."""
    prefix = _common_prefix(names)
    rests = [name[len(prefix) :] for name in names]
    tail = _common_prefix([rest[::-1] for rest in rests])[::-1]
    tail = tail[tail.index(".") :] if "." in tail else ""
    if tail.count(".") < 2 or any(len(rest) <= len(tail) for rest in rests):
        tail = ""
    return f"{prefix}*{tail}"


def summarize_names(names: Sequence[str], *, max_patterns: int = 3) -> NameSummary:
    """Summarise names by their shared first word: the largest clusters (two or more names) first, ties in the
    order given; names outside the patterns shown are counted as others."""
    clusters: dict[str, list[str]] = {}
    for name in names:
        match = _FIRST_WORD.match(name)
        clusters.setdefault((match.group(0) if match else name).casefold(), []).append(name)
    shared = sorted((members for members in clusters.values() if len(members) > 1), key=len, reverse=True)
    shown = shared[:max_patterns]
    return NameSummary(
        patterns=tuple(name_pattern(members) for members in shown),
        others=len(names) - sum(len(members) for members in shown),
    )


@dataclass(frozen=True)
class PurposeGroup:
    """Changed items that share one purpose (the vendor's words), in document order."""

    items: tuple[Item, ...]

    @property
    def purpose(self) -> str | None:
        return self.items[0].purpose

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self.items)

    @property
    def summary(self) -> NameSummary:
        return summarize_names(self.names)

    @property
    def label(self) -> str:
        """The shared purpose, or what stands in for it: a retired item has none in the current document."""
        if self.purpose:
            return self.purpose
        retired = {item.removed_in for item in self.items if item.removed_in}
        return "not in the current document" + (f" (retired in {retired.pop()})" if len(retired) == 1 else "")

    @property
    def flags(self) -> tuple[str, ...]:
        """Flags every item of the group has and the purpose does not already state."""
        common = [flag for flag in item_flags(self.items[0]) if all(flag in item_flags(i) for i in self.items)]
        return tuple(flag for flag in common if not _STATED[flag].search(self.purpose or ""))

    def flags_of(self, item: Item) -> tuple[str, ...]:
        """An item's own flags beyond the group's (e.g. the one CPV-only item of a pair sharing a purpose)."""
        return tuple(
            flag
            for flag in item_flags(item)
            if flag not in self.flags and not _STATED[flag].search(self.purpose or "")
        )

    @property
    def where(self) -> str | None:
        return _where(self.items)


@dataclass(frozen=True)
class DiffSide:
    """One side of a diff ("removed" or "added") as purpose groups."""

    change: str
    groups: tuple[PurposeGroup, ...]

    @property
    def title(self) -> str:
        return self.change.capitalize()

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(item for group in self.groups for item in group.items)

    @property
    def where(self) -> str | None:
        """Where every item of the side lives ("Microsoft Graph application permissions"), else None."""
        return _where(self.items)


@dataclass(frozen=True)
class DiffLayout:
    """A diff in reading order: its removed side first, then its added side (empty sides left out)."""

    diff: Diff
    sides: tuple[DiffSide, ...]

    @property
    def title(self) -> str:
        return f"Changes {self.diff.from_version} → {self.diff.to_version}"

    @property
    def summary(self) -> str:
        return f"+{len(self.diff.added)} added, −{len(self.diff.removed)} removed"

    @property
    def names(self) -> tuple[str, ...]:
        """Every changed name, once, in the order the layout shows them."""
        return tuple(item.name for side in self.sides for item in side.items)


def group_by_purpose(items: Iterable[Item]) -> tuple[PurposeGroup, ...]:
    """Items grouped by identical purpose (whitespace aside); items without one group by the revision that
    retired them.

    Order: larger groups first, then document order of a group's first item. The biggest shared purpose is what
    a revision is about (v5's 36 "(Future Use) ISPM" permissions) and leads; the one-item lines that follow keep
    the document's own order, so they can be read beside the document. Deterministic: the catalog's item order is
    fixed and the sort is stable.
    """
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        key = ("purpose", " ".join(item.purpose.split())) if item.purpose else ("retired", item.removed_in or "")
        groups.setdefault(key, []).append(item)
    ordered = sorted(groups.values(), key=len, reverse=True)  # stable: equal sizes keep first-item order
    return tuple(PurposeGroup(items=tuple(members)) for members in ordered)


def diff_layout(diff: Diff) -> DiffLayout:
    """Removed items first (what an admin may now take away), then added ones (what to grant), by purpose."""
    sides = tuple(
        DiffSide(change=change, groups=group_by_purpose(items))
        for change, items in (("removed", diff.removed), ("added", diff.added))
        if items
    )
    return DiffLayout(diff=diff, sides=sides)


def _common_prefix(texts: Sequence[str]) -> str:
    shortest, longest = min(texts, default=""), max(texts, default="")
    for n, (a, b) in enumerate(zip(shortest, longest, strict=False)):
        if a != b:
            return shortest[:n]
    return shortest


def _where(items: Sequence[Item]) -> str | None:
    places = {(item.api_title, item.kind_title) for item in items}
    if len(places) != 1:
        return None
    api_title, kind_title = places.pop()
    return f"{api_title} {kind_title}{'s' if len(items) != 1 else ''}"


__all__ = [
    "CPV_ONLY",
    "FUTURE",
    "P2_ONLY",
    "DiffLayout",
    "DiffSide",
    "NameSummary",
    "PurposeGroup",
    "diff_layout",
    "group_by_purpose",
    "item_flags",
    "name_pattern",
    "summarize_names",
]
