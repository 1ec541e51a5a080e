"""The package's import graph: no cycles, and each module imports only from its own layer or
below, lazy imports inside functions counted (imports under ``if TYPE_CHECKING:`` never run
and are not). The trial process's code (`autotune.child`) never reaches optuna or the
launcher, and the launcher names the child's entry only as data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autotune", "studies", "search_spaces")

# Lowest first. A module may import modules of its own layer and of the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # values and helpers with no process side
    (
        "autotune.errors",
        "autotune.paths",
        "autotune.defaults",
        "autotune.files",
        "autotune.secrets",
        "autotune.commands",
        "autotune.wire",
        "autotune.measure",
        "autotune.objective",
        "autotune.numerics",
        "autotune.host",
        "autotune.pytree",
    ),
    # what is tuned and on what
    ("autotune.backends", "studies", "search_spaces"),
    # the trial process
    ("autotune.child",),
    # starting and watching trial processes
    ("autotune.launch",),
    # what is stored, and reading it
    (
        "autotune.records_check",
        "autotune.records",
        "autotune.records_legacy",
        "autotune.resilient_storage",
        "autotune.storage",
        "autotune.liveness",
        "autotune.analysis",
        "autotune.fidelity_verdict",
        "autotune.sensitivity",
    ),
    # running a study
    (
        "autotune.study_options",
        "autotune.jobs",
        "autotune.pruning",
        "autotune.ledger",
        "autotune.outcome",
        "autotune.pending",
        "autotune.sampler",
        "autotune.starting_points",
        "autotune.confirm_claim",
        "autotune.tuner",
    ),
    # reading a finished study
    (
        "autotune.export_check",
        "autotune.export",
        "autotune.verify",
        "autotune.plots",
        "autotune.tables",
        "autotune.report",
    ),
    # the user's entry points: the command line and the package's public API
    ("autotune.cli", "autotune.api", "autotune.__main__", "=autotune"),
)
# Third-party modules the trial interpreter may lack: the child side never imports them.
TUNER_ONLY = ("optuna", "sqlalchemy", "matplotlib", "tqdm", "yaml")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(name: str, path: Path) -> set[str]:
    """Every module name an import statement in `path` names, at any depth."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or (
                getattr(test, "attr", None) == "TYPE_CHECKING"
            ):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
            # `from pkg import submodule` runs pkg/__init__, which is the package's own
            # business: the edge that matters is the one to the submodule.
            found.update(subs or [module])

    Visitor().visit(ast.parse(path.read_text(), str(path)))
    return found


def _own(module: str) -> str | None:
    """The module of ours that `module` resolves to (a name inside it: its module)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


GRAPH = {
    name: {own for m in _imported(name, path) if (own := _own(m)) and own != name}
    for name, path in MODULES.items()
}
IMPORTS = {name: _imported(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    """The layer of the longest entry naming `module` or a package above it ("=": exactly)."""
    matches = [
        (len(entry), i)
        for i, layer in enumerate(LAYERS)
        for entry in layer
        if module == entry.lstrip("=")
        or (not entry.startswith("=") and module.startswith(entry + "."))
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")
    return max(matches)[1]


def test_the_graph_sees_lazy_imports() -> None:
    # The lazy import in the trial process's dispatch, and the child's lazy torch imports.
    assert "autotune.child.trial" in GRAPH["autotune.child.main"]
    assert "torch" in IMPORTS["autotune.child.trial"]


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if ".training" not in m))
def test_imports_stay_in_layer_order(module: str) -> None:
    mine = _layer(module)
    upward = sorted(m for m in GRAPH[module] if _layer(m) > mine)
    assert upward == [], f"{module} (layer {mine}) imports from higher layers"


def _reached_from(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m])
    return seen


# The child's code, and the study modules it imports by name (a registry, not an import).
CHILD_SIDE = sorted(
    set().union(
        *(
            _reached_from(m)
            for m in MODULES
            if m.startswith(("autotune.child", "studies")) and not m.startswith("studies.training")
        )
    )
)


def test_the_child_side_is_what_the_trial_process_reaches() -> None:
    assert {"autotune.child.trial", "autotune.backends.cpu", "studies.mnist"} <= set(CHILD_SIDE)
    assert not any(m.startswith(("autotune.launch", "autotune.records")) for m in CHILD_SIDE)


@pytest.mark.parametrize("module", CHILD_SIDE)
def test_the_trial_side_never_imports_tuner_only_packages(module: str) -> None:
    bad = sorted(m for m in IMPORTS[module] if m.split(".")[0] in TUNER_ONLY)
    assert bad == []


def test_the_launcher_names_the_child_only_as_data() -> None:
    from autotune.launch import runner

    for name in MODULES:
        if name.startswith("autotune.launch"):
            assert not any(m.startswith("autotune.child") for m in GRAPH[name]), name
    assert runner.TRIAL_ENTRY in MODULES
