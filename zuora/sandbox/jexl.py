"""A small JEXL evaluator for custom event trigger conditions.

Supported, as Zuora's custom events use it: `changeType`, `Object.Field`, `Object.Field_old`,
`==`, `!=`, `>`, `<`, `>=`, `<=`, `=^` (starts with), `=~` (in a list or matches), `&&`,
`||`, `!` (and the word forms `and`, `or`, `not`, `eq`, `ne`, `gt`, `lt`, `ge`, `le`),
parentheses, list literals, and string, number, `null`, `true` and `false` literals. Names
are case-sensitive; an unknown field is null. Numbers compare as numbers, and a string that
holds a number compares with a number as that number (custom fields are text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|>=|<=|=\^|=~|&&|\|\||[><!()\[\],])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_WORD_OPS = {
    "and": "&&",
    "or": "||",
    "not": "!",
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "lt": "<",
    "ge": ">=",
    "le": "<=",
}
_LITERALS = {"null": None, "true": True, "false": False}


class JexlError(ValueError):
    """The condition cannot be parsed."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # num | str | op | name | end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise JexlError(f"unexpected character {text[pos : pos + 1]!r} at {pos}")
        kind = match.lastgroup or ""
        raw = match.group(kind)
        start = match.start(kind)
        if kind == "num":
            out.append(_Tok("lit", Decimal(raw), start))
        elif kind == "str":
            body = raw[1:-1]
            out.append(_Tok("lit", re.sub(r"\\(.)", r"\1", body), start))
        elif kind == "name" and raw in _LITERALS:
            out.append(_Tok("lit", _LITERALS[raw], start))
        elif kind == "name" and raw in _WORD_OPS:
            out.append(_Tok("op", _WORD_OPS[raw], start))
        else:
            out.append(_Tok(kind, raw, start))
        pos = match.end()
    out.append(_Tok("end", None, len(text)))
    return out


# An expression tree is nested tuples: ("lit", v) | ("var", name) | ("list", [..])
# | ("not", e) | (op, left, right).
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.value != op:
            raise JexlError(f"expected {op!r} at {tok.pos}")

    def parse(self) -> Node:
        node = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            raise JexlError(f"unexpected {tok.value!r} at {tok.pos}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek().kind == "op" and self.peek().value == "||":
            self.take()
            node = ("||", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.compare()
        while self.peek().kind == "op" and self.peek().value == "&&":
            self.take()
            node = ("&&", node, self.compare())
        return node

    def compare(self) -> Node:
        node = self.unary()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("==", "!=", ">", "<", ">=", "<=", "=^", "=~"):
            self.take()
            node = (tok.value, node, self.unary())
        return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.value == "!":
            self.take()
            return ("not", self.unary())
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "lit":
            return ("lit", tok.value)
        if tok.kind == "name":
            return ("var", tok.value)
        if tok.kind == "op" and tok.value == "(":
            node = self.or_()
            self.expect(")")
            return node
        if tok.kind == "op" and tok.value == "[":
            items: list[Node] = []
            if not (self.peek().kind == "op" and self.peek().value == "]"):
                items.append(self.or_())
                while self.peek().kind == "op" and self.peek().value == ",":
                    self.take()
                    items.append(self.or_())
            self.expect("]")
            return ("list", items)
        where = "the end" if tok.kind == "end" else f"{tok.value!r} at {tok.pos}"
        raise JexlError(f"expected a value, found {where}")


@dataclass(frozen=True)
class Condition:
    """A parsed condition; `evaluate` is cheap and never raises on data."""

    text: str
    tree: Node

    def evaluate(self, context: dict[str, Any]) -> bool:
        return _truthy(_eval(self.tree, context))

    @property
    def mentions_change_type(self) -> bool:
        return "changeType" in _names(self.tree)


def parse(text: str) -> Condition:
    """Parse a condition or raise `JexlError` with a message saying where it broke."""
    if not text or not text.strip():
        raise JexlError("the condition is empty")
    return Condition(text, _Parser(text).parse())


def _names(node: Node) -> set[str]:
    kind = node[0]
    if kind == "var":
        return {node[1]}
    if kind == "lit":
        return set()
    if kind == "list":
        return set().union(*(_names(n) for n in node[1])) if node[1] else set()
    return set().union(*(_names(n) for n in node[1:]))


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return (
            _truthy(a) == _truthy(b)
            if isinstance(a, bool) and isinstance(b, bool)
            else (str(a).lower() == str(b).lower())
        )
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None and not (isinstance(a, str) and isinstance(b, str)):
        return na == nb
    return str(a) == str(b)


def _order(op: str, a: Any, b: Any) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        left: Any = na
        right: Any = nb
    elif isinstance(a, str) and isinstance(b, str):
        left, right = a, b
    else:
        return False
    outcome: bool = {
        ">": left > right,
        "<": left < right,
        ">=": left >= right,
        "<=": left <= right,
    }[op]
    return outcome


def _truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return value != ""
    return bool(value)


def _eval(node: Node, ctx: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        return ctx.get(node[1])
    if kind == "list":
        return [_eval(n, ctx) for n in node[1]]
    if kind == "not":
        return not _truthy(_eval(node[1], ctx))
    if kind == "&&":
        return _truthy(_eval(node[1], ctx)) and _truthy(_eval(node[2], ctx))
    if kind == "||":
        return _truthy(_eval(node[1], ctx)) or _truthy(_eval(node[2], ctx))
    left, right = _eval(node[1], ctx), _eval(node[2], ctx)
    if kind == "==":
        return _equal(left, right)
    if kind == "!=":
        return not _equal(left, right)
    if kind == "=^":
        return isinstance(left, str) and isinstance(right, str) and left.startswith(right)
    if kind == "=~":
        if isinstance(right, list):
            return any(_equal(left, item) for item in right)
        if isinstance(left, str) and isinstance(right, str):
            try:
                return re.fullmatch(right, left) is not None
            except re.error:
                return False
        return False
    return _order(kind, left, right)


def context_for(
    object_name: str, change_type: str, new: dict[str, Any] | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    """Variables of one row change: `Object.Field`, `Object.Field_old`, `changeType`."""
    ctx: dict[str, Any] = {"changeType": change_type}
    current = new if new is not None else old or {}
    for name, value in current.items():
        ctx[f"{object_name}.{name}"] = value
    for name, value in (old or {}).items():
        ctx[f"{object_name}.{name}_old"] = value
    return ctx
