"""Config problems as an operator reads them: every problem at once, one line each, with the
file, line and column, the field path as written in the file, and a "did you mean" where a
name was misspelt.

Kept apart from config.py, which defines what a valid file is; this module only explains why
a file is not.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from raasctl.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    file: str
    line: int | None
    column: int | None
    field: str  # as written in the file, e.g. environments.local.queue.kind; "" for the file
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
        }


class ConfigInvalid(ConfigError):
    """A config file with one or more problems (exit 2); the CLI prints one line each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for a close known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not close:
        # A name that differs only in case (clientdepositupdate) scores low on ratio.
        close = [k for k in known if k.lower() == name.lower()][:1]
    return f" (did you mean {close[0]}?)" if close else ""


def problems_from(
    exc: ValidationError, data: Any, root: Any, where: str, text: str
) -> list[Problem]:
    """Every validation error of `exc` as a Problem located in the YAML `text`."""
    node = _compose(text)
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path, written = _field_path(loc, data)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(str(written[-1]), _known_keys(root, loc))
        line, column = _position(node, written)
        problems.append(Problem(where, line, column, path, message))
    return sorted(problems, key=lambda problem: (problem.line or 0, problem.column or 0))


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # the loader accepted it, so this is not expected; no positions
        return None


def _field_path(loc: tuple[Any, ...], data: Any) -> tuple[str, list[Any]]:
    """The path as written in the file, without the union tags pydantic adds to it."""
    parts: list[Any] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue
        parts.append(item)
        if isinstance(node, dict):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
    return ".".join(str(part) for part in parts), parts


def _position(node: yaml.Node | None, path: list[Any]) -> tuple[int | None, int | None]:
    """Line and column (1-based) of the deepest key of `path` found in the file."""
    mark = node.start_mark if node is not None else None
    for item in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(item):
                    mark, node = key.start_mark, value
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            if item >= len(node.value):
                break
            node = node.value[item]
            mark = node.start_mark
        else:
            break
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


# ---------------------------------------------------------------- known keys


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold: Annotated and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or isinstance(annotation, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _tag_matches(model: type[BaseModel], item: Any) -> bool:
    kind = model.model_fields.get("kind")
    return (
        kind is not None
        and get_origin(kind.annotation) is Literal
        and item in get_args(kind.annotation)
    )


def _known_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where `loc`'s last item was found, walking the models by `loc`."""
    current: list[Any] = [root]
    for item in loc[:-1]:
        following: list[Any] = []
        for candidate in current:
            if _is_model(candidate):
                if item in candidate.model_fields:
                    following.extend(_members(candidate.model_fields[item].annotation))
                elif _tag_matches(candidate, item):
                    following.append(candidate)
            elif get_origin(candidate) is dict:
                following.extend(_members(get_args(candidate)[1]))
        current = following
    return sorted(
        {key for candidate in current if _is_model(candidate) for key in candidate.model_fields}
    )
