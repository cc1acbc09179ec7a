"""YAML text -> plain Python data, remembering the line of every key.

PyYAML alone loses line numbers, accepts duplicate keys (the last one silently wins) and reads `1e-4`
as a string (YAML 1.1 wants a dot in a float). A recipe error must point at a line, a duplicate key
is almost always a mistake, and learning rates are written `1e-4`, so this module composes the node
tree itself and builds the data from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from ossft.errors import UserError

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 floats without a dot (1e-4, 5E+3), which PyYAML's YAML 1.1 resolver reads as strings.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)
# YAML 1.2 booleans: only true / false. YAML 1.1 also reads yes / no / on / off as booleans, so
# `save_strategy: no` or `eval_strategy: no` (Hugging Face's own spelling) would arrive as False.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class YamlDoc:
    """Parsed data plus the 1-based line of every key path (and of every list item)."""

    data: object
    lines: dict[Path_, int] = field(default_factory=dict)
    source: str = "<recipe>"

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of `path` (a missing key points at its parent)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def parse_yaml(text: str, source: str) -> YamlDoc:
    _reject_tabs(text, source)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise UserError(_syntax_message(exc, source)) from exc
    if node is None:
        raise UserError(
            f"{source} is empty. A recipe is a YAML mapping with at least `model:` and `data:` "
            "sections; start from recipes/quickstart.yaml."
        )
    doc = YamlDoc(data=None, source=source)
    doc.data = _build(node, (), doc)
    return doc


def parse_scalar(text: str) -> object:
    """A `--set` value, typed as YAML would type it (`1e-4` -> float, `[7, 15]` -> list)."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _reject_tabs(text: str, source: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            raise UserError(
                f"{source} line {number}: a tab in the indentation. YAML indents with spaces only; "
                "replace the tab with spaces."
            )


def _syntax_message(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{source}{where}: not valid YAML ({problem}). Check the indentation and quoting there."


def _build(node: yaml.Node, path: Path_, doc: YamlDoc) -> object:
    if isinstance(node, yaml.MappingNode):
        result: dict = {}
        first_seen: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, (str, int, float, bool)):
                raise UserError(f"{doc.source} line {line}: keys must be plain names, got {key!r}.")
            key = str(key)
            dotted = ".".join(str(p) for p in (*path, key))
            if key in first_seen:
                raise UserError(
                    f"{doc.source} line {line}: key '{dotted}' appears twice (first on line "
                    f"{first_seen[key]}). YAML keeps only one of them; delete the other."
                )
            first_seen[key] = line
            doc.lines[(*path, key)] = line
            result[key] = _build(value_node, (*path, key), doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.lines[(*path, index)] = item.start_mark.line + 1
            items.append(_build(item, (*path, index), doc))
        return items
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> object:
    try:
        return _Loader("").construct_object(node)
    except yaml.constructor.ConstructorError:
        # A lone `=` resolves to YAML 1.1's "value" tag, which no safe loader constructs (found by
        # tests/test_recipe_fuzz.py): it is text, as written.
        return node.value
