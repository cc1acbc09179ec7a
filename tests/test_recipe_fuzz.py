"""Malformed recipes, generated: `ossft validate` always ends in exit 2 with a short message, never a traceback."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .conftest import REPO

pytestmark = pytest.mark.e2e  # hundreds of CLI runs

QUICKSTART = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
SECTIONS = list(QUICKSTART)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def broken_recipes(draw) -> str:
    kind = draw(st.sampled_from(["garbage", "top-level", "mutate", "drop"]))
    if kind == "garbage":
        return draw(st.text(max_size=200))
    if kind == "top-level":
        return yaml.safe_dump(draw(values), allow_unicode=True)
    recipe = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    section = draw(st.sampled_from(SECTIONS))
    if kind == "drop":
        recipe.pop(draw(st.sampled_from(["model", "data"])))
    else:
        keys = list(recipe[section]) + [draw(st.text(min_size=1, max_size=12))]
        recipe[section][draw(st.sampled_from(keys))] = draw(values)
    return yaml.safe_dump(recipe, allow_unicode=True)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=broken_recipes())
@example(text="=")  # YAML 1.1's "value" tag, which no safe loader constructs: once a ConstructorError traceback
def test_broken_recipes_exit_2_without_traceback(cli, tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    result = cli("validate", path)
    if result.exit_code == 0:  # the mutation happened to be valid (e.g. a valid value for that key)
        return
    assert result.exit_code == 2, (text, result.output, result.exception)
    assert "Traceback" not in result.stderr and result.stderr.startswith("error:")
    assert len(result.stderr) < 2000
