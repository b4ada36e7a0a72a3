"""The ITDR permission catalog: the vendor's document as data, and pure logic over it."""

from catalog.diffs import (
    DiffLayout,
    DiffSide,
    NameSummary,
    PurposeGroup,
    diff_layout,
    group_by_purpose,
    summarize_names,
)
from catalog.models import (
    API_TITLES,
    Api,
    Diff,
    Discrepancy,
    Ids,
    Impact,
    Item,
    Kind,
    Lookup,
    MicrosoftMeaning,
    Privilege,
    Revision,
    Status,
)
from catalog.store import Catalog, CatalogError, UnknownVersion, load_catalog

__all__ = [
    "API_TITLES",
    "Api",
    "Catalog",
    "CatalogError",
    "Diff",
    "DiffLayout",
    "DiffSide",
    "Discrepancy",
    "Ids",
    "Impact",
    "Item",
    "Kind",
    "Lookup",
    "MicrosoftMeaning",
    "NameSummary",
    "Privilege",
    "PurposeGroup",
    "Revision",
    "Status",
    "UnknownVersion",
    "diff_layout",
    "group_by_purpose",
    "load_catalog",
    "summarize_names",
]
