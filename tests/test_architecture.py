"""restpg's layers (docs/architecture.md): every import inside the package points down or within
its layer, every module has a layer, and the import graph has no circle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "restpg"

# Bottom to top. Store, training and evaluation are one rank: they work together on runs (a run's
# samples are stored, human ratings steer selection, the comparison trains what it lacks).
LAYERS = {
    "foundation": ["errors", "jsonl", "options", "cancel", "runs", "store"],
    "data": ["longlamp", "retrieval", "prompts", "support"],
    "inference": ["hardware", "packed_linear", "shared_prefix", "shared_attention", "models", "vllm_sampling"],
    "method": [
        # evaluation
        "metrics",
        "reward",
        "evaluate",
        "personalize",
        "profile_swap",
        "compare",
        "results",
        # training
        "reasoning",
        "train",
        "lora_dropout",
        "tracking",
        "em",
        "human_selection",
        "versions",
        # store
        "generations",
        "ratings",
        "arena",
        "exports",
        "calibration",
        "samples",
    ],
    "app": [
        "access",
        "hosts",
        "links",
        "jobs",
        "explore",
        "explore_tab",
        "rate_tab",
        "arena_tab",
        "results_tab",
        "train_tab",
        "app",
        "serve",
        "ship",
    ],
    "cli": ["cli", "__main__", "__init__"],
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def package_imports() -> dict[str, set[str]]:
    """Each module's imports of other restpg modules (module level and inside functions)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("restpg."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = deps - {path.stem}
    return graph


def test_every_module_has_a_layer():
    assert set(package_imports()) == set(RANK)


def test_imports_point_down_or_within_a_layer():
    names = list(LAYERS)
    upward = [
        f"{module} ({names[RANK[module]]}) imports {dep} ({names[RANK[dep]]})"
        for module, deps in package_imports().items()
        for dep in deps
        if dep in RANK and RANK[dep] > RANK[module]
    ]
    assert upward == []


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
