"""The package's layout rules, read from its source with `ast` (nothing is imported):

(a) a vendor module under `gateway/sources/<vendor>` or `gateway/destinations/<vendor>` is
    imported only from inside its own folder, or by its package's declared face (the registry in
    the package's `__init__`, which must name every vendor);
(b) a storage backend (`gateway/outbox/sqlite/`, `gateway/outbox/postgres/`) is imported only
    from inside `gateway/outbox/`;
(c) no import cycle among gateway modules;
(d) no module over `MAX_LINES` lines.

Which imports count: (a) and (b) count every import, at module level, under `if TYPE_CHECKING:`
or inside a function, because each is code outside a folder knowing what is inside it. (c)
counts the module-level imports (those in a module-level `try` or `if` included) and those under
`if TYPE_CHECKING:`: two modules whose annotations name each other are one knot to read, type
check and move, even though the second import never runs. It leaves out imports inside a
function: they run once every module is loaded, and deferring a heavy or optional module (a
backend, a command's) is what they are for. An import names the module it loads
(`from gateway.destinations import base` is `gateway.destinations.base`), not the packages above
it that Python initializes on the way.

Known exceptions (the work of issue 19 still under way) are listed below, each with the change
that removes it. An exception that no longer occurs does not fail: it is reported as a
`StaleLayoutException` warning, so the list is pruned as the moves land.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = ROOT / "gateway"
MAX_LINES: Final = 400

VENDOR_FOLDERS: Final = ("gateway.sources", "gateway.destinations")
FACES: Final = {
    # The modules of each folder that anyone may import; every other module or subpackage in
    # the folder is a vendor's, private to it. As each package's docstring declares.
    "gateway.sources": frozenset(
        {
            "gateway.sources",
            "gateway.sources.base",
            "gateway.sources.coerce",
            "gateway.sources.forms",
            "gateway.sources.server",
        }
    ),
    "gateway.destinations": frozenset({"gateway.destinations", "gateway.destinations.base"}),
}
BACKENDS: Final = ("gateway.outbox.sqlite", "gateway.outbox.postgres")
OUTBOX: Final = "gateway.outbox"

# Known exceptions: (rule, importer, imported) for an import, (rule, module, module) for a
# cycle through those two, (rule, module, "") for a size, each with why it is allowed. Empty: a
# new entry needs a reason a reviewer accepts.
EXCEPTIONS: Final[dict[tuple[str, str, str], str]] = {}


class StaleLayoutException(UserWarning):
    """A known exception that no longer occurs: prune it from EXCEPTIONS."""


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, where it is and how it runs."""

    importer: str
    target: str
    path: Path
    line: int
    kind: str
    """`module`, `type_checking` or `function`."""

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every gateway module by its dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[str]:
    known = modules()
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        # A relative import: from the importer's package, one level up per extra dot.
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        # `from package import module` loads the module; `from module import name` the module.
        yield sub if sub in known else base


def _walk(
    tree: ast.AST, importer: str, path: Path, is_package: bool, kind: str
) -> Iterator[Import]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, importer, is_package):
                yield Import(importer, target, path, node.lineno, kind)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(node, importer, path, is_package, "function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test) and kind == "module":
            for child in node.body:
                yield from _walk(
                    ast.Module([child], []), importer, path, is_package, "type_checking"
                )
            for child in node.orelse:
                yield from _walk(ast.Module([child], []), importer, path, is_package, kind)
        else:
            yield from _walk(node, importer, path, is_package, kind)


@cache
def imports() -> tuple[Import, ...]:
    """Every import of a gateway module by a gateway module."""
    found: list[Import] = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        found.extend(
            i
            for i in _walk(tree, name, path, is_package, "module")
            if i.target == "gateway" or i.target.startswith("gateway.")
        )
    return tuple(found)


def _within(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def vendor_of(module: str) -> str | None:
    """The vendor folder (`gateway.destinations.meta_capi`) a module belongs to, if any."""
    for folder in VENDOR_FOLDERS:
        if _within(module, folder) and module not in FACES[folder]:
            return ".".join(module.split(".")[: folder.count(".") + 2])
    return None


def _check(found: dict[tuple[str, str, str], str], rules: set[str]) -> None:
    """Fail on every violation not excused; warn of every exception of `rules` not seen."""
    excused = {key for key in found if key in EXCEPTIONS}
    stale = [key for key in EXCEPTIONS if key[0] in rules and key not in found]
    for key in stale:
        warnings.warn(
            f"layout exception {key} no longer occurs ({EXCEPTIONS[key]}): remove it",
            StaleLayoutException,
            stacklevel=2,
        )
    problems = [message for key, message in sorted(found.items()) if key not in excused]
    assert not problems, "\n".join(problems)


STALE_WARNS = pytest.mark.filterwarnings("always::tests.test_layout.StaleLayoutException")


@STALE_WARNS
def test_vendor_modules_are_imported_only_through_their_folders_face() -> None:
    found: dict[tuple[str, str, str], str] = {}
    for i in imports():
        vendor = vendor_of(i.target)
        if vendor is None or _within(i.importer, vendor):
            continue
        folder = vendor.rsplit(".", 1)[0]
        if i.importer == folder:
            continue  # the registry names every vendor
        key = ("vendor", i.importer, i.target)
        found.setdefault(
            key,
            f"{i.where()}: {i.importer} imports {i.target} (rule: a vendor's modules are "
            f"private to {vendor}; from outside it, import {folder}'s face)",
        )
    _check(found, {"vendor"})


@STALE_WARNS
def test_storage_backends_are_imported_only_inside_the_outbox() -> None:
    found: dict[tuple[str, str, str], str] = {}
    for i in imports():
        backend = next((b for b in BACKENDS if _within(i.target, b)), None)
        if backend is None or _within(i.importer, OUTBOX):
            continue
        key = ("backend", i.importer, i.target)
        found.setdefault(
            key,
            f"{i.where()}: {i.importer} imports {i.target} (rule: a storage backend is "
            f"imported only inside {OUTBOX}; code outside it uses the outbox interface)",
        )
    _check(found, {"backend"})


def _cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or with a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        # Tarjan's algorithm; the package is small enough for recursion.
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, {}):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _path(edges: dict[str, dict[str, Import]], start: str, members: set[str]) -> list[Import]:
    """One cycle through `start` within its component: the imports that make it."""
    previous: dict[str, Import] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt, imp in sorted(edges.get(node, {}).items()):
            if nxt not in members or nxt in previous:
                continue
            previous[nxt] = imp
            if nxt == start:
                chain = [imp]
                while chain[0].importer != start:
                    chain.insert(0, previous[chain[0].importer])
                return chain
            queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


@STALE_WARNS
def test_no_import_cycle_among_gateway_modules() -> None:
    edges: dict[str, dict[str, Import]] = {}
    known = modules()
    for i in imports():
        if i.kind != "function" and i.target in known and i.target != i.importer:
            edges.setdefault(i.importer, {}).setdefault(i.target, i)
    found: dict[tuple[str, str, str], str] = {}
    for component in _cycles(edges):
        excuses = [
            key
            for key in EXCEPTIONS
            if key[0] == "cycle" and key[1] in component and key[2] in component
        ]
        # Show a cycle through a module no exception names, if any: the new one.
        named = {m for key in excuses for m in key[1:]}
        start = next((m for m in component if m not in named), component[0])
        chain = _path(edges, start, set(component))
        steps = "\n".join(f"  {imp.where()}: {imp.importer} imports {imp.target}" for imp in chain)
        message = (
            f"import cycle among {', '.join(component)} (rule: no import cycle among gateway "
            f"modules; module-level and TYPE_CHECKING imports):\n{steps}"
        )
        for key in excuses:
            found[key] = message
        # Excused only while every module in it is one an exception names: a module that
        # joins a known cycle makes a new one.
        if not set(component) <= named:
            found[("cycle", component[0], component[-1])] = message
    _check(found, {"cycle"})


@STALE_WARNS
def test_no_module_over_the_line_limit() -> None:
    found: dict[tuple[str, str, str], str] = {}
    for name, path in modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found[("size", name, "")] = (
                f"{path.relative_to(ROOT)}: {name} has {lines} lines "
                f"(rule: no module over {MAX_LINES} lines)"
            )
    _check(found, {"size"})
