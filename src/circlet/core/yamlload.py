"""Safe YAML loading for configs: merge keys done one way, alias bombs refused, lines kept.

Pure: takes the config text, never a file. Used by `circlet.core.config`.

- Only the safe constructor is used (`SafeConstructor`: plain scalars, lists, maps, YAML 1.1
  tags; no Python objects). libyaml's parser is used when PyYAML was built with it (about ten
  times faster, so a large config loads in a few milliseconds); otherwise PyYAML's pure parser.
- Merge keys (`<<: *x`, `<<: [*a, *b]`) follow YAML 1.1, and several `<<` keys in one mapping
  are allowed (spec config.md 1.3). Keys written in the mapping win over merged ones; among
  merged mappings the first one that has a key wins (as in `<<: [*a, *b]`). Duplicate plain
  keys: the last one wins.
- Aliases are checked before anything is built: a document whose tree, with every alias
  expanded, has more than `MAX_EXPANDED_NODES` nodes ("billion laughs"), or which refers to
  itself, is refused.
- Lines: the composed node tree is kept, and `line_of` walks it along a key path, so finding a
  line costs the depth of the path and loading costs nothing extra.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from circlet.core.errors import ConfigError, Problem

try:  # libyaml's parser with the same safe constructor and resolver
    from yaml import CSafeLoader as _ParserBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _ParserBase  # type: ignore[assignment]

MAX_EXPANDED_NODES = 1_000_000  # a few-thousand-line config expands to tens of thousands

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_STR_TAG = "tag:yaml.org,2002:str"


class SafeConfigLoader(_ParserBase):
    """`CSafeLoader` (or `SafeLoader`) with deterministic handling of several `<<` keys."""

    def flatten_mapping(self, node: MappingNode) -> None:
        """Replace `<<` entries by the merged pairs (first source wins), then the explicit pairs."""
        merged: list[tuple[Node, Node]] = []
        explicit: list[tuple[Node, Node]] = []
        seen: set[tuple[str, str]] = set()
        has_merge = False
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == _VALUE_TAG:
                    key_node.tag = _STR_TAG
                explicit.append((key_node, value_node))
                continue
            has_merge = True
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {source.id}",
                        source.start_mark,
                    )
                self.flatten_mapping(source)
                # Within one source the last duplicate is its value; across sources the first wins.
                effective: dict[tuple[str, str], tuple[Node, Node]] = {}
                for pair in source.value:
                    effective[_key_identity(pair[0])] = pair
                for identity, pair in effective.items():
                    if identity not in seen:
                        seen.add(identity)
                        merged.append(pair)
        if has_merge:
            node.value = merged + explicit


def _key_identity(node: Node) -> tuple[str, str]:
    if isinstance(node, ScalarNode):
        return (node.tag, str(node.value))
    return ("", str(id(node)))


def load_yaml(
    text: str, *, filename: str = ".circleci/config.yml", max_nodes: int = MAX_EXPANDED_NODES
) -> tuple[Any, Node | None]:
    """Parse one YAML document safely: (data, composed node tree). Raises ConfigError.

    The data shares objects where the text used aliases; treat it as read-only.
    """
    loader = SafeConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        size, culprit = expanded_size(node, max_nodes)
        if size is None:
            raise ConfigError([_problem("an alias refers to a node that contains it", culprit, filename)])
        if size > max_nodes:
            message = f"aliases expand the document past {max_nodes:,} nodes; refusing to load it"
            raise ConfigError([_problem(message, culprit, filename)])
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part) or "unreadable document"
        line = min(mark.line + 1, text.count("\n") + 1) if mark is not None else None
        raise ConfigError([Problem(message=f"invalid YAML: {what}", line=line, file=filename)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(message=f"invalid YAML: {exc}", file=filename)]) from exc
    except RecursionError as exc:
        raise ConfigError([Problem(message="invalid YAML: nested too deeply", file=filename)]) from exc
    finally:
        loader.dispose()


def _problem(message: str, node: Node, filename: str) -> Problem:
    line = node.start_mark.line + 1 if node.start_mark is not None else None
    return Problem(message=message, line=line, file=filename)


def expanded_size(root: Node, limit: int) -> tuple[int | None, Node]:
    """Node count of the tree with every alias expanded, and the node to blame.

    Returns (None, node) when `node` contains itself through an alias, (count, node) with
    count > limit as soon as `node` passes the limit, else (count, root). Linear in the number
    of distinct nodes: sizes are memoised per node.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()  # expanded but unfinished: the ancestors of what is popped next
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(child)] for child in _children(node)))
            if sizes[key] > limit:
                return sizes[key], node
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return None, node
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)], root


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


_INDEX = re.compile(r"\[(\d+)\]")


def line_of(root: Node | None, path: str) -> int | None:
    """1-based line of a dotted key path such as `jobs.build.steps[1].run.command`.

    Keys may contain dots (`jobs.test2.1.steps`): the longest key that fits is taken. When the
    path goes further than the document, the line of the deepest part that exists is given;
    None when not even the first key exists.
    """
    if root is None:
        return None
    node, rest, found = root, path, None
    while rest:
        index = _INDEX.match(rest)
        if index is not None:
            if not isinstance(node, SequenceNode) or int(index.group(1)) >= len(node.value):
                break
            node = node.value[int(index.group(1))]
            rest = rest[index.end() :]
            line_node = node
        else:
            pair = _find_key(node, rest)
            if pair is None:
                break
            line_node, node = pair[0], pair[1]
            rest = rest[len(pair[0].value) :]
        rest = rest.removeprefix(".")
        found = line_node.start_mark.line + 1 if line_node.start_mark is not None else found
    return found


def _find_key(node: Node, rest: str) -> tuple[Node, Node] | None:
    """The (key, value) pair whose key is the longest prefix of `rest` ending at `.`, `[` or the end."""
    if not isinstance(node, MappingNode):
        return None
    best: tuple[Node, Node] | None = None
    for key_node, value_node in reversed(node.value):  # the last duplicate key is the one in effect
        key = key_node.value
        if (
            isinstance(key_node, ScalarNode)
            and rest.startswith(key)
            and rest[len(key) : len(key) + 1] in ("", ".", "[")
            and (best is None or len(key) > len(best[0].value))
        ):
            best = (key_node, value_node)
    return best
