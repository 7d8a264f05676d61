"""The package's import graph has no cycles, counting imports inside functions.

A function-level import hides a cycle from Python (the import runs after both modules are loaded)
but not from the reader: two modules that need each other are one module split in two, and the
stage seams (preprocessing -> training -> application) stop being seams. So every ``import`` of an
``m2m_bids`` module is read with :mod:`ast`, wherever it stands, and two graphs are checked:

* modules (``m2m_bids.training.api`` -> ``m2m_bids.training.data``);
* packages: each module collapsed to its subpackage or top-level module (``m2m_bids.training``,
  ``m2m_bids.config``), so that ``training`` -> ``classical`` -> ``training`` fails even when the
  modules involved differ.

A package's ``__init__`` importing its own submodules is not an edge of the package graph (it is the
same package). Lazy imports stay lawful where they keep a heavy optional dependency off a fast path;
:data:`LAZY_ALLOWED` lists the module-level imports that are kept inside functions on purpose, so a
new function-level package import is a decision, not an accident.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import m2m_bids

PACKAGE_DIR = Path(m2m_bids.__file__).parent

#: Imports kept inside functions although no cycle forces them, each with its reason. The command
#: line must answer ``m2m --help``, ``--version`` and usage errors without loading torch, numpy or
#: nipype (it takes ~0.15 s; torch alone takes seconds), and a dry run or a refused dataset never
#: loads the preprocessing or training stacks.
LAZY_ALLOWED: dict[tuple[str, str], str] = {
    ("m2m_bids.cli.app", "m2m_bids.runner"): "the runner loads the stages; --help and usage errors do not need them",
    ("m2m_bids.config", "m2m_bids.label_rule"): "numpy and pandas, only when a label rule is given",
    ("m2m_bids.preflight", "m2m_bids.backends"): "torch (the model registry), only once options are checked",
    ("m2m_bids.preflight", "m2m_bids.models"): "torch, only for a group run of a torch arch",
    ("m2m_bids.runner", "m2m_bids.preproc.api"): "nipype and ANTs: a dry run or a refused dataset never loads them",
    ("m2m_bids.backends", "m2m_bids.training.api"): "each backend loads its stage code when it is used",
    ("m2m_bids.backends", "m2m_bids.interpret.api"): "each backend loads its stage code when it is used",
    ("m2m_bids.backends", "m2m_bids.interpret.group"): "each backend loads its stage code when it is used",
    ("m2m_bids.backends", "m2m_bids.classical.api"): "scikit-learn, only for a classical arch",
    ("m2m_bids.backends", "m2m_bids.classical.apply"): "scikit-learn, only for a classical bundle",
}


#: The layers of docs/architecture.md, bottom first: a package may import its own layer (the cycle
#: tests keep that acyclic) and the layers below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("m2m_bids", "exitcodes", "io_utils", "runtime", "entity_labels", "label_rule", "model_identity",
     "textinput", "atlases", "testing"),
    ("models",),
    ("config", "synth"),
    ("bids",),
    ("preproc", "reports"),
    ("model_inputs",),
    ("training", "interpret", "classical"),
    ("backends", "preflight"),
    ("runner",),
    ("cli", "demo", "__main__"),
)

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(importer: str, is_package: bool, node: ast.AST, known: set[str]) -> Iterator[str]:
    """The ``m2m_bids`` modules one import statement loads (``from pkg import mod`` names a module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "m2m_bids":
                yield alias.name
    elif isinstance(node, ast.ImportFrom):
        source = _resolve(importer, is_package, node)
        if source.split(".")[0] != "m2m_bids":
            return
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            yield sub if sub in known else source


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(importer, imported, at module level) for every import of a package module."""
    known = set(modules)
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(node) for node in tree.body}
        top_level |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for child in ast.walk(node):
                    top_level.discard(id(child))
                    if isinstance(child, (ast.Import, ast.ImportFrom)):
                        setattr(child, "_type_only", True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "_type_only", False):
                continue
            for target in _targets(name, path.name == "__init__.py", node, known):
                if target != name and target in known:
                    edges.append((name, target, id(node) in top_level))
    return edges


def _package_of(module: str) -> str:
    """``m2m_bids.training.api`` -> ``m2m_bids.training``; ``m2m_bids.config`` stays itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path, or None (iterative depth-first search)."""
    colour: dict[str, int] = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return [*path[path.index(child):], child]
            elif not colour.get(child):
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def _graph(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        if a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def test_the_parser_sees_function_level_and_relative_imports() -> None:
    edges = _imports(_modules())
    assert ("m2m_bids.runner", "m2m_bids.config", True) in edges
    assert any(not top for *_, top in edges), "function-level imports are part of the graph"


def test_no_module_import_cycle() -> None:
    cycle = _find_cycle(_graph([(a, b) for a, b, _ in _imports(_modules())]))
    assert cycle is None, "module import cycle: " + " -> ".join(cycle or [])


def test_no_package_import_cycle() -> None:
    pairs = [(_package_of(a), _package_of(b)) for a, b, _ in _imports(_modules())]
    cycle = _find_cycle(_graph(pairs))
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


def test_function_level_imports_are_deliberate() -> None:
    """A package import inside a function needs a reason: a heavy dependency kept off a fast path."""
    lazy = sorted({(a, b) for a, b, top in _imports(_modules()) if not top} - set(LAZY_ALLOWED))
    assert not lazy, "move to module level or add to LAZY_ALLOWED with its reason:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in lazy)


def test_allowed_lazy_imports_still_exist() -> None:
    """An allow-list entry whose import moved to module level or disappeared is removed with it."""
    lazy = {(a, b) for a, b, top in _imports(_modules()) if not top}
    assert set(LAZY_ALLOWED) <= lazy, sorted(set(LAZY_ALLOWED) - lazy)


def test_command_line_start_up_loads_no_heavy_library() -> None:
    """What the allow-list protects: importing the command line loads none of the heavy stacks."""
    code = ("import sys, m2m_bids.cli.app; "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'nipype', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _layer(package: str) -> int:
    short = package.removeprefix("m2m_bids.")
    return next(i for i, names in enumerate(LAYERS) if short in names)


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(name) for name in _modules()}
    missing = sorted(p for p in packages if not any(p.removeprefix("m2m_bids.") in names for names in LAYERS))
    assert not missing, f"add to LAYERS (and docs/architecture.md): {missing}"


def test_packages_import_only_their_layer_and_below() -> None:
    """The map in docs/architecture.md holds: no stage reaches up (preprocessing never imports
    training, models never import the data pipeline)."""
    upward = sorted({(_package_of(a), _package_of(b)) for a, b, _ in _imports(_modules())
                     if _layer(_package_of(b)) > _layer(_package_of(a))})
    assert not upward, "imports that reach up a layer:\n" + "\n".join(f"  {a} -> {b}" for a, b in upward)
