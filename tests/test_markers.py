"""Every test has exactly one kind (conftest.KINDS); a test that declares none is `unit`."""

from __future__ import annotations

import tomllib

from tests.conftest import KINDS, KINDS_OF_TESTS, REPO


def test_every_test_has_exactly_one_kind(request):
    kinds = request.config.stash[KINDS_OF_TESTS]  # all collected, before `-m` deselects
    assert kinds
    wrong = {nodeid: marks for nodeid, marks in kinds.items() if len(marks) != 1}
    assert not wrong, f"tests with other than one of the kinds {KINDS}: {wrong}"


def test_the_kinds_are_registered_and_strict():
    options = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    assert sorted(line.split(":")[0] for line in options["markers"]) == sorted(KINDS)
    assert "--strict-markers" in options["addopts"].split()


def test_the_check_fails_on_two_kinds_and_defaults_to_unit(pytester):
    markers = "\n".join(f"    {kind}: a kind" for kind in KINDS)
    pytester.makeini(f"[pytest]\naddopts = --strict-markers -p no:cacheprovider\nmarkers =\n{markers}\n")
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    pytester.makepyfile(
        test_kinds="""
        import pytest

        from tests.test_markers import test_every_test_has_exactly_one_kind  # noqa: F401

        pytestmark = pytest.mark.bench

        def test_bench():
            pass

        @pytest.mark.e2e
        def test_bench_and_e2e():
            pass
        """,
        test_plain="def test_plain():\n    pass\n",
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_kinds.py::test_bench_and_e2e*"])
    assert pytester.runpytest("-m", "unit").parseoutcomes() == {"passed": 1, "deselected": 3}
