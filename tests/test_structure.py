"""The package's structure: concept packages in layers, imports pointing down.

``sddlib/<package>/<module>.py``; a package may import from the packages below it in
:data:`LAYERS` and from itself, never from one above it or beside it. Imports inside
functions count (a late import is still a dependency); ``if TYPE_CHECKING:`` blocks do not
(annotations only).
"""
import ast
import functools
import importlib
import pkgutil
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import sddlib

PACKAGE = Path(sddlib.__file__).parent

# bottom to top; the packages of one entry sit side by side and do not import each other
LAYERS = [("base",), ("data", "models", "pruning"), ("config",), ("storage",), ("engine",),
          ("scheduling",), ("analysis",), ("book",)]
TOP = ("api", "cli", "__init__", "__main__")  # sddlib's own modules: the public API, the CLI
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
RANK["(top)"] = len(LAYERS)


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    """Dotted name (``engine.train``, ``cli``) -> file, for every module of sddlib."""
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
            for path in PACKAGE.rglob("*.py")}


def _imported(module: str, node: ast.ImportFrom | ast.Import) -> set[str]:
    """The sddlib modules (dotted, as in :func:`_modules`) that one import statement names."""
    known = _modules()
    found = set()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level:  # relative: resolved against the importing module's package
        base = module.split(".")[:-1][:len(module.split(".")) - node.level]
        prefix = ".".join(base + ([node.module] if node.module else []))
        names = [f"sddlib.{prefix}".rstrip(".")]
        names += [f"{names[0]}.{alias.name}" for alias in node.names]
    else:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
        if name == "sddlib" or not name.startswith("sddlib."):
            continue
        dotted = name[len("sddlib."):]
        while dotted and dotted not in known and f"{dotted}.__init__" not in known:
            dotted = dotted.rpartition(".")[0]
        if dotted:
            found.add(dotted if dotted in known else f"{dotted}.__init__")
    return found


def _walk(tree: ast.AST, top_level_only: bool):
    """The import statements of a module, skipping ``if TYPE_CHECKING:`` blocks (and, with
    ``top_level_only``, everything inside functions and classes)."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.ClassDef)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def module_imports(top_level_only: bool = False) -> dict[str, set[str]]:
    """Each sddlib module and the sddlib modules it imports."""
    graph = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        found = set()
        for node in _walk(tree, top_level_only):
            found |= _imported(module, node)
        graph[module] = found - {module}
    return graph


def package_of(module: str) -> str:
    return module.split(".")[0] if "." in module else "(top)"


def test_every_module_lives_in_a_concept_package():
    loose = sorted(m for m in _modules() if "." not in m and m not in TOP)
    assert not loose, f"modules outside the packages: {loose}"
    packages = {package_of(m) for m in _modules() if "." in m}
    assert packages == {name for names in LAYERS for name in names}


def test_each_package_says_what_it_holds_in_one_paragraph():
    for names in LAYERS:
        for name in names:
            doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
            assert doc and len(doc) > 80 and "\n\n" not in doc.strip(), name


def test_imports_point_down_the_layers():
    wrong = []
    for module, imported in module_imports().items():
        for other in imported:
            mine, theirs = package_of(module), package_of(other)
            if mine != theirs and not RANK[theirs] < RANK[mine]:
                wrong.append(f"{module} -> {other}")
    assert not wrong, "imports that point up or sideways: " + ", ".join(sorted(wrong))


def test_the_layering_test_sees_a_wrong_import(tmp_path):
    """The check itself: an upward import, a sideways one and a relative one are found."""
    module = "pruning.prune"
    for text, expected in (("from sddlib.engine import train", {"engine.__init__", "engine.train"}),
                           ("from sddlib.models.architectures import MLP",
                            {"models.architectures"}),
                           ("from ..storage import store", {"storage.__init__", "storage.store"})):
        node = ast.parse(text).body[0]
        assert _imported(module, node) == expected, text


def test_no_module_imports_itself_back():
    graph = module_imports(top_level_only=True)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {error.args[1]}") from None
    assert set(order) >= set(graph)


def test_the_numpy_theory_never_reaches_the_engine():
    graph = module_imports()
    seen, todo = set(), ["analysis.theory"]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    assert {package_of(m) for m in seen} <= {"analysis", "base"}, sorted(seen)


def test_every_module_imports():
    for module in pkgutil.walk_packages([str(PACKAGE)], "sddlib."):
        if module.name != "sddlib.__main__":  # `python -m sddlib` runs the command line
            importlib.import_module(module.name)
