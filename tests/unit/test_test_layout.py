"""The test tree's own rule: test modules have unique basenames.

tests/ has no __init__.py files, so pytest imports each test module by its basename; two
modules with one name (say tests/unit/test_x.py and tests/integration/test_x.py) stop the
whole run at collection ("import file mismatch") while each passes when run alone.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_have_unique_basenames() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1], sorted(
        str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if names[p.name] > 1)
