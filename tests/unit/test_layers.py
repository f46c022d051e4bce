"""The package's layering, read from the source with ``ast`` (nothing is imported).

Each folder of ``persec/`` is a layer and imports only the layers below it
(docs/architecture.md):

    leaves (top-level modules) → data → decoding → models → objectives → training
    → inference → evaluation → experiment → serve → commands → cli

Imports inside functions count as much as those at the top of a file. Within a layer
any module may import another, as long as no import cycle forms; so nothing but the
CLI imports ``persec.commands``. Lightning is imported only by ``training/`` and the
data modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tiny import REPO

PACKAGE = REPO / "persec"

LAYERS = (
    "leaves",
    "data",
    "decoding",
    "models",
    "objectives",
    "training",
    "inference",
    "evaluation",
    "experiment",
    "serve",
    "commands",
    "cli",
)
TOP = {"cli": "cli", "__main__": "cli", "api": "cli", "persec": "cli"}  # the public API sits on top
LIGHTNING_ALLOWED = ("persec.training.", "persec.data.module.")  # modules under, or equal to


def module_name(path: Path, root: Path) -> str:
    """``persec/data/layouts.py`` → ``persec.data.layouts``; a package → its name."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer a ``persec`` module belongs to (a top-level module is a leaf)."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP["persec"]
    first = parts[1]
    if first in TOP:
        return TOP[first]
    if first in LAYERS:
        return first
    return "leaves"


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """The ``persec`` modules ``path`` imports, each with its line number.

    ``from persec.x import y`` counts as importing ``persec.x.y`` when that is a
    module, else ``persec.x``; relative imports are resolved against ``module``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            names = [n if n in known else target for n in names]
        else:
            continue
        found.extend((n, node.lineno) for n in names if n == "persec" or n.startswith("persec."))
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """Every module under ``root`` → the ``persec`` modules it imports."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Every upward import (``commands`` is above all library code) and every import
    cycle, as text."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    problems = []
    for module, deps in graph.items():
        for dep, line in deps:
            if dep == "persec" and module != "persec":
                problems.append(f"{module}:{line} imports the package root `persec`")
                continue
            here, there = layer_of(module), layer_of(dep)
            if rank[there] > rank[here]:
                problems.append(f"{module}:{line} imports {dep} ({here} → {there}, upward)")
    problems.extend(f"import cycle: {' → '.join(c)}" for c in cycles(graph))
    return problems


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One representative path per import cycle (depth-first search)."""
    edges = {m: sorted({d for d, _ in deps if d in graph and d != m}) for m, deps in graph.items()}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in edges[m]:
            if state.get(d) == 1:
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def lightning_users(root: Path = PACKAGE) -> list[str]:
    """Modules outside training/ and the data modules that import Lightning."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if (module + ".").startswith(LIGHTNING_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names):
                bad.append(f"{module}:{node.lineno}")
    return bad


def test_layers_import_only_downwards_without_cycles():
    problems = violations(import_graph())
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_lightning_stays_in_training_and_data_modules():
    assert lightning_users() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "persec"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "files, expected",
    [
        (  # a model importing the training loop: upward
            {"models/net.py": "from persec.training.loop import fit\n", "training/loop.py": ""},
            "upward",
        ),
        (  # a leaf importing a model, inside a function: still upward
            {"image.py": "def f():\n    from persec.models import net\n", "models/net.py": ""},
            "upward",
        ),
        (  # library code reaching into the CLI
            {
                "experiment/run.py": "from persec.commands.render import go\n",
                "commands/render.py": "",
            },
            "experiment → commands, upward",
        ),
        (  # two data modules importing each other
            {
                "data/a.py": "from persec.data import b\n",
                "data/b.py": "from persec.data.a import x\n",
            },
            "import cycle",
        ),
        (  # a relative import that goes up
            {"data/a.py": "from ..objectives import loss\n", "objectives/loss.py": ""},
            "upward",
        ),
    ],
)
def test_a_planted_violation_is_caught(tmp_path, files, expected):
    problems = violations(import_graph(_tree(tmp_path, files)))
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_clean_planted_tree_passes(tmp_path):
    root = _tree(
        tmp_path,
        {
            "image.py": "",
            "data/reader.py": "from persec.image import decode\n",
            "models/net.py": "from persec.data.reader import read\n",
            "commands/go.py": "from persec.models import net\n",
            "cli.py": "from persec.commands import go\n",
        },
    )
    assert violations(import_graph(root)) == []


def test_no_test_imports_another_test():
    """Shared tiny configs, models and data live in helper modules (tiny, factories)."""
    tests = PACKAGE.parent / "tests"
    bad = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            bad += [f"{path.relative_to(tests)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[-1].startswith("test_") or n.startswith("tests.")]  # fmt: skip
    assert bad == []
