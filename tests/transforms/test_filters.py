import pytest

from liveagg.spec import AllOf, AnyOf, Predicate
from liveagg.transforms.filters import compile_filter

MSG = {"status": 200, "country": "de", "flag": True, "ratio": 0.5, "nested": {"k": "v"}}


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        (Predicate("status", "eq", 200), True),
        (Predicate("status", "eq", 200.0), True),
        (Predicate("status", "eq", "200"), False),
        (Predicate("flag", "eq", 1), False),
        (Predicate("flag", "eq", True), True),
        (Predicate("status", "ne", 404), True),
        (Predicate("missing", "ne", 404), False),
        (Predicate("missing", "eq", None), False),
        (Predicate("country", "in", ["de", "fr"]), True),
        (Predicate("country", "in", ["us"]), False),
        (Predicate("country", "not_in", ["us"]), True),
        (Predicate("missing", "not_in", ["us"]), False),
        (Predicate("status", "gt", 199), True),
        (Predicate("status", "ge", 200), True),
        (Predicate("status", "lt", 200), False),
        (Predicate("status", "le", 200), True),
        (Predicate("country", "gt", 1), False),
        (Predicate("ratio", "lt", 1), True),
        (Predicate("country", "exists"), True),
        (Predicate("missing", "exists"), False),
        (Predicate("missing", "exists", False), True),
        (Predicate("nested.k", "eq", "v"), True),
        (Predicate("status", "ne", None), False),
        (Predicate("flag", "gt", False), False),
        (Predicate("status", "eq", {"a": 1}), False),
        (Predicate("status", "not_in", [404, None]), False),
        (Predicate("status", "in", [200, None]), True),
    ],
)
def test_predicates(predicate: Predicate, expected: bool) -> None:
    test = compile_filter(predicate)
    assert test is not None
    assert test(MSG) is expected


def test_all_and_any() -> None:
    both = compile_filter(AllOf((Predicate("status", "eq", 200), Predicate("country", "eq", "fr"))))
    either = compile_filter(
        AnyOf((Predicate("status", "eq", 200), Predicate("country", "eq", "fr")))
    )
    assert both is not None and either is not None
    assert both(MSG) is False
    assert either(MSG) is True


def test_no_filter() -> None:
    assert compile_filter(None) is None
