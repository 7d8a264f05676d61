"""Derived class labels: a small expression over ``participants.tsv`` columns (``--label-rule``).

For example the paper's biomarker rule ``ttau / abeta42 > 0.24`` (true -> the last class, false ->
the first), or a conditional that names classes directly: ``'AD' if ttau / abeta42 > 0.24 else 'CN'``
(nest it for 3 classes).

Rules come from config files and the command line, so they are parsed with :mod:`ast` and
evaluated by a tree walker that accepts only a whitelist of nodes: no names other than columns,
no attribute access, no calls other than a few math functions. ``eval`` is never used. The
configuration parses a rule when it is built (a malformed rule is a usage error at once);
:mod:`m2m_bids.training.labels` evaluates it on the participants.

Evaluation is bounded, because a rule is a few vectorised numpy operations over the participants:
a rule has at most :data:`MAX_RULE_CHARS` characters and :data:`MAX_RULE_NODES` syntax nodes,
exponents are number literals of magnitude at most :data:`MAX_EXPONENT` (``9**9**9`` is refused),
arithmetic runs in float64 (it overflows to infinity instead of growing Python integers without
end) and never on text (``'x' * 10**12`` is refused).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"log": np.log, "log10": np.log10, "abs": np.abs,
                                                "sqrt": np.sqrt, "exp": np.exp}


#: Limits that keep the evaluation of a rule small (see the module docstring).
MAX_RULE_CHARS = 1000
MAX_RULE_NODES = 200
MAX_EXPONENT = 10


class RuleError(ValueError):
    """The label rule is not a valid expression of the supported form."""


@dataclass(frozen=True)
class LabelRule:
    """A parsed, validated label rule; :meth:`evaluate` maps a participants table to class names."""

    source: str
    tree: ast.Expression
    columns: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> LabelRule:
        """Parse ``source`` and check every node against the whitelist (raises :class:`RuleError`)."""
        if len(source) > MAX_RULE_CHARS:
            raise RuleError(f"the label rule has {len(source)} characters, more than the {MAX_RULE_CHARS} allowed")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError) as err:
            raise RuleError(f"cannot parse the label rule {source[:80]!r}: {getattr(err, 'msg', err)}") from None
        n_nodes = sum(1 for _ in ast.walk(tree))
        if n_nodes > MAX_RULE_NODES:
            raise RuleError(f"the label rule has {n_nodes} terms, more than the {MAX_RULE_NODES} allowed")
        columns: list[str] = []
        _check(tree.body, columns)
        return cls(source=source, tree=tree, columns=tuple(dict.fromkeys(columns)))

    def evaluate(self, table: pd.DataFrame, classes: list[str]) -> pd.Series:
        """Class name per row (``None`` where an input is missing or the result is not a class)."""
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise RuleError(f"the label rule uses column(s) {missing} that participants.tsv lacks; "
                            f"available: {sorted(map(str, table.columns))}")
        env = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)
               if _numeric_like(table[c]) else table[c].to_numpy(dtype=object) for c in self.columns}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            try:
                value = _eval(self.tree.body, env, len(table))
            except TypeError as err:
                raise RuleError(f"the label rule {self.source!r} does arithmetic on a text column ({err}); "
                                "compare text columns with == or != only") from None
        value = np.broadcast_to(np.asarray(value, dtype=object), (len(table),))
        inputs_ok = np.ones(len(table), dtype=bool)
        for c in self.columns:
            inputs_ok &= table[c].notna().to_numpy()
        out: list[str | None] = []
        for ok, v in zip(inputs_ok, value, strict=True):
            out.append(_to_class(v, classes) if ok else None)
        return pd.Series(out, index=table.index, dtype=object)


def _numeric_like(series: pd.Series) -> bool:
    values = series.dropna()
    return len(values) == 0 or pd.to_numeric(values, errors="coerce").notna().all()


def _to_class(value: Any, classes: list[str]) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        if len(classes) != 2:
            raise RuleError("a true/false label rule needs exactly two classes (false -> first, true -> "
                            f"second), got {classes}; use 'A' if ... else 'B' for more classes")
        return classes[1] if value else classes[0]
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value) if str(value) in classes else None


def _check(node: ast.AST, columns: list[str]) -> None:
    """Reject any node outside the whitelist; collect the column names the rule reads."""
    if isinstance(node, ast.Name):
        columns.append(node.id)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool)):
            raise RuleError(f"unsupported constant {node.value!r} in the label rule")
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        if any(isinstance(side, ast.Constant) and isinstance(side.value, str) for side in (node.left, node.right)):
            raise RuleError("arithmetic on text (such as 'x' * 3) is not allowed in the label rule")
        if isinstance(node.op, ast.Pow) and not _small_number(node.right):
            raise RuleError(f"exponents in the label rule must be numbers between -{MAX_EXPONENT} and "
                            f"{MAX_EXPONENT} (e.g. x ** 2), not {ast.unparse(node.right)[:40]!r}")
        _check(node.left, columns)
        _check(node.right, columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, columns)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, columns)
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for sub in [node.left, *node.comparators]:
            _check(sub, columns)
    elif isinstance(node, ast.IfExp):
        for sub in (node.test, node.body, node.orelse):
            _check(sub, columns)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
          and len(node.args) == 1 and not node.keywords):
        _check(node.args[0], columns)
    else:
        raise RuleError(f"unsupported syntax {ast.dump(node)[:60]!r} in the label rule; allowed: column "
                        f"names, numbers, strings, + - * / ** %, comparisons, and/or/not, "
                        f"'A' if cond else 'B', and {sorted(_FUNCTIONS)}")


def _small_number(node: ast.AST) -> bool:
    """A number literal (optionally negated) of magnitude at most :data:`MAX_EXPONENT`."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool) and abs(node.value) <= MAX_EXPONENT)


def _float(value: Any) -> Any:
    """Python numbers as float64, so arithmetic overflows to inf rather than growing big integers."""
    return np.float64(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _eval(node: ast.AST, env: dict[str, np.ndarray], n: int) -> Any:
    """Vectorised evaluation over all participants at once (numpy arrays of length ``n``)."""
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_float(_eval(node.left, env, n)), _float(_eval(node.right, env, n)))
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env, n)
        if isinstance(node.op, ast.Not):
            return np.logical_not(operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = _eval(node.values[0], env, n)
        for value in node.values[1:]:
            result = combine(result, _eval(value, env, n))
        return result
    if isinstance(node, ast.Compare):
        result: Any = True
        left = _eval(node.left, env, n)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env, n)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.IfExp):
        test = np.broadcast_to(np.asarray(_eval(node.test, env, n), dtype=bool), (n,))
        body = np.broadcast_to(np.asarray(_eval(node.body, env, n), dtype=object), (n,))
        orelse = np.broadcast_to(np.asarray(_eval(node.orelse, env, n), dtype=object), (n,))
        return np.where(test, body, orelse)
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](_eval(node.args[0], env, n))  # type: ignore[attr-defined]
    raise RuleError(f"unsupported node {type(node).__name__}")  # pragma: no cover - _check rejects it
