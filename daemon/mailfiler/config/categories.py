"""Outlook categories as marks: the names that show tracking in Outlook.

Shared by the Exchange backends (EWS and Microsoft Graph): Dynamics 365 shows
its tracking state in Outlook with a category, and so does mailfiler."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from mailfiler.config.base import Strict


def _category_name(value: str) -> str:
    # Exchange keeps a category as a plain string of up to 255 characters; Outlook's
    # master list and its colour are the user's business, not mailfiler's
    if not value.strip():
        raise ValueError("a category name cannot be empty")
    if len(value) > 255:
        raise ValueError("a category name has at most 255 characters")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError(f"{value!r} holds a control character")
    return value


CategoryName = Annotated[str, AfterValidator(_category_name)]


def category_problem(name: str) -> str | None:
    """Why *name* cannot be an Outlook category, or None (a backend's ``tag_name``)."""
    try:
        _category_name(name)
    except ValueError as exc:
        return str(exc)
    return None


class OutlookCategories(Strict):
    """The Outlook categories set on tracked and shunted mail."""

    tracked: CategoryName = Field(default="Tracked in CRM", description="Set on every tracked message.")
    failed: CategoryName = Field(
        default="Not tracked (see CRM)", description="Set on a message kept aside in the shunt."
    )

    @property
    def names(self) -> tuple[str, str]:
        """(tracked, failed): the categories mailfiler sets, and never tracks by."""
        return (self.tracked, self.failed)


def categories_switch(value: object) -> object:
    """``true`` means the default names, ``false`` means no categories (a field validator's body)."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


__all__ = ["CategoryName", "OutlookCategories", "categories_switch", "category_problem"]
