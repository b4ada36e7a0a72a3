"""An independent reader of the vendor's permission document, used to check the catalog against it.

The catalog's data files were reviewed by hand; this parser re-reads the source so a test can prove that
every item, purpose text, marker and revision in the catalog is what the document says.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SEED_NAME = "seed/000_e3b55850a2ea5803.txt"

SECTION_TITLES = {
    "Azure Active Directory Roles": "entra_role",
    "Graph API": "graph",
    "Partner Center API": "partner_center",
    "Exchange API": "exchange",
    "O365 Management API": "o365_management",
    "Exchange Admin Role Group - Organization Management": "exchange_role_group",
}


def shared_dir() -> Path | None:
    """The shared reference folder beside the checkout (CI lays it there), or $ITDR_SHARED_DIR."""
    candidates = [os.environ.get("ITDR_SHARED_DIR"), Path(__file__).resolve().parents[2] / "shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / SEED_NAME).is_file():
            return Path(candidate)
    return None


@dataclass
class Row:
    section: str
    names: list[str]
    purpose: str
    new_marker: bool
    name_cell: str


@dataclass
class SeedRevision:
    version: str
    date: str
    title: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class SeedDocument:
    rows: list[Row]
    revisions: list[SeedRevision]


_CELL_SPLIT = re.compile(r"\s*\|\s*")
_MARKER = re.compile(r"\((CPV Only)\)")
_REVISION = re.compile(r"^(\d{2}-[A-Z]{3}-\d{2}) (?:Revision|Initial Release) \((v\d)\) - (.+)$")


def _records(lines: list[str]) -> list[str]:
    """Join table rows that the document breaks across lines (a cell opened with '|' and closed later)."""
    records: list[str] = []
    buffer = ""
    for line in lines:
        buffer = f"{buffer}\n{line}" if buffer else line
        if buffer.startswith("|") and (buffer.count("|") < 3 or not buffer.rstrip().endswith("|")):
            continue
        records.append(buffer)
        buffer = ""
    return records


def parse(text: str) -> SeedDocument:
    rows: list[Row] = []
    revisions: list[SeedRevision] = []
    section: str | None = None
    for record in _records(text.splitlines()):
        stripped = record.strip()
        if stripped in SECTION_TITLES:
            section = SECTION_TITLES[stripped]
            continue
        if stripped == "Revision History":
            section = "revisions"
            continue
        if not stripped.startswith("|") or section is None:
            continue
        cells = [cell for cell in _CELL_SPLIT.split(stripped.strip("|").strip())]
        if section == "revisions":
            head = cells[0]
            match = _REVISION.match(head)
            if match:
                revisions.append(SeedRevision(match[2], match[1], match[3].strip()))
            elif head == "Permissions Added":
                revisions[-1].added = cells[1].split()
            elif head == "Permissions Removed":
                revisions[-1].removed = cells[1].split()
            continue
        name_cell, purpose = cells[0].strip(), " ".join(cells[1].split()) if len(cells) > 1 else ""
        if name_cell in {"ROLE", "PERMISSION REQUESTED"}:
            continue
        # Rows whose purpose cell starts on the next line keep everything after the first '|' split.
        new_marker = name_cell.startswith("NEW!")
        bare = _MARKER.sub(" ", name_cell.removeprefix("NEW!"))
        names = [bare.strip()] if section in {"entra_role", "exchange_role_group"} else bare.split()
        rows.append(Row(section, names, purpose, new_marker, name_cell))
    return SeedDocument(rows, revisions)


def load() -> SeedDocument | None:
    folder = shared_dir()
    if folder is None:
        return None
    return parse((folder / SEED_NAME).read_text(encoding="utf-8"))
