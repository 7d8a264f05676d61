"""Entity labels are compared bare: one function strips ``sub-``/``ses-``/``task-`` wherever labels enter."""

from __future__ import annotations

import pytest

from m2m_bids.entity_labels import strip_prefix


@pytest.mark.parametrize(("label", "entity", "bare"), [
    ("sub-01", "sub", "01"), ("01", "sub", "01"), (" sub-01\t", "sub", "01"), ("ses-pre", "ses", "pre"),
    ("task-rest", "task", "rest"), ("sub-sub-01", "sub", "sub-01"), ("ses-01", "sub", "ses-01"),
    ("subject01", "sub", "subject01"), ("sub-", "sub", ""),
])
def test_strip_prefix(label: str, entity: str, bare: str) -> None:
    assert strip_prefix(label, entity) == bare


def test_strip_prefix_is_idempotent() -> None:
    assert strip_prefix(strip_prefix("sub-01", "sub"), "sub") == "01"
