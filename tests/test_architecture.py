"""restpg's layers (docs/architecture.md): each folder of the package is a layer, every import
inside the package points down or within its layer, and the import graph has no circle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "restpg"

# Bottom to top. The modules at the package's top are the foundation (errors, files, run folders)
# and the CLI over everything. Store, training and evaluation are one rank: they work together on
# runs (a run's samples are stored, human ratings steer selection, the comparison trains what it
# lacks).
RANKS = {
    "foundation": 0,
    "data": 1,
    "inference": 2,
    "store": 3,
    "training": 3,
    "evaluation": 3,
    "app": 4,
    "cli": 5,
}
FOUNDATION = {"errors", "jsonl", "options", "runs"}
CLI = {"cli", "__main__", "__init__"}


def layer_of(module: str) -> str:
    """``restpg.inference.models`` -> inference; a top-level module is foundation or cli."""
    parts = module.split(".")
    if len(parts) > 2 or parts[-1] in RANKS:
        return parts[1]
    name = parts[1] if len(parts) > 1 else "__init__"
    if name in FOUNDATION:
        return "foundation"
    if name in CLI:
        return "cli"
    raise AssertionError(f"{module} sits at the package's top but is neither foundation nor cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The restpg modules an import names (``from ..data import prompts`` names restpg.data.prompts);
    ``modules``: every module of the package."""
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("restpg"):
            return []
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    named = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    return named or [base]


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_imports() -> dict[str, set[str]]:
    """Each module's imports of other restpg modules (module level and inside functions)."""
    graph = {}
    modules = all_modules()
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                deps.update(resolve(module, path.name == "__init__.py", node, set(modules)))
        graph[module] = deps - {module, "restpg"}  # `from .. import __version__`: the package's version
    return graph


def test_every_module_sits_in_a_layer_folder_or_is_foundation_or_cli():
    layers = {module: layer_of(module) for module in all_modules() if module != "restpg"}
    assert set(layers.values()) <= set(RANKS)
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(RANKS) - {
        "foundation",
        "cli",
    }


def test_imports_point_down_or_within_a_layer():
    upward = [
        f"{module} ({layer_of(module)}) imports {dep} ({layer_of(dep)})"
        for module, deps in package_imports().items()
        if module != "restpg"
        for dep in deps
        if RANKS[layer_of(dep)] > RANKS[layer_of(module)]
    ]
    assert upward == []


def test_the_layer_folders_hold_only_code_their_layer_needs():
    """The data layer loads no model, and nothing below the app imports Gradio."""
    for module, path in all_modules().items():
        if module == "restpg":
            continue
        nodes = list(ast.walk(ast.parse(path.read_text())))
        imported = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
        imported |= {
            (node.module or "").split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        if RANKS[layer_of(module)] < RANKS["app"]:
            assert "gradio" not in imported, module
        if layer_of(module) in ("foundation", "data"):
            assert not imported & {"torch", "transformers", "peft"}, module


def test_the_import_graph_has_no_circle():
    graph = package_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path, module, dep]))
            if dep in graph and dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
