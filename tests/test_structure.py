"""The package's structure: one module per concept, imports pointing one way."""
import ast
import importlib
import pkgutil
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import sddlib

PACKAGE = Path(sddlib.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Each sddlib module and the sddlib modules it imports when it is imported (its
    top-level imports; ``TYPE_CHECKING`` blocks and imports inside functions excluded)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        tree = ast.parse(path.read_text())
        found = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        graph[name] = found - {name}
    return graph


def test_no_module_imports_itself_back():
    graph = module_imports()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {error.args[1]}") from None
    assert set(order) >= set(graph)


def test_layers_point_one_way():
    """config and the registries below the engine; the engine below sweeps; sweeps below
    analysis; the book and the command line on top; the numpy theory never reaches the
    engine."""
    graph = module_imports()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for module in graph.get(todo.pop(), ()):
                if module not in seen:
                    seen.add(module)
                    todo.append(module)
        return seen

    for low in ("data", "models", "prune", "files", "distance", "fast", "train", "config",
                "retrain", "store"):
        assert not reaches(low) & {"experiment", "sweep", "checkpoints", "figures", "cli",
                                   "metrics", "plots", "landscape"}, low
    assert not reaches("experiment") & {"sweep", "figures", "cli"}
    assert not reaches("parallel") & {"experiment", "sweep"}
    assert not reaches("theory") & {"experiment", "sweep", "checkpoints", "figures", "train"}
    assert not reaches("metrics") & {"experiment", "sweep", "checkpoints", "figures"}


def test_every_module_imports():
    for module in pkgutil.iter_modules([str(PACKAGE)]):
        if module.name != "__main__":  # `python -m sddlib` runs the command line
            importlib.import_module(f"sddlib.{module.name}")
