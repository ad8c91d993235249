"""Field names, dotted ones included: the same table as the oracle's test."""

from __future__ import annotations

from typing import Any

import pytest

from liveagg.transforms.fields import getter, values_of
from tests.support.field_cases import FIELD_CASES


@pytest.mark.parametrize(
    ("msg", "field", "value", "rule"), FIELD_CASES, ids=[rule for *_, rule in FIELD_CASES]
)
def test_field_names(msg: dict[str, Any], field: str, value: Any, rule: str) -> None:
    get = getter(field)
    assert get(msg) == value, rule
    assert values_of([msg, {}], field, get) == [value, None], rule
