"""The ITDR permission catalog: the vendor's document as data, and pure logic over it."""

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
from catalog.store import Catalog, CatalogError, UnknownVersion, load_catalog, normalize

__all__ = [
    "API_TITLES",
    "Api",
    "Catalog",
    "CatalogError",
    "Diff",
    "Discrepancy",
    "Ids",
    "Impact",
    "Item",
    "Kind",
    "Lookup",
    "MicrosoftMeaning",
    "Privilege",
    "Revision",
    "Status",
    "UnknownVersion",
    "load_catalog",
    "normalize",
]
