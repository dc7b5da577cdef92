"""The package's shape, held by tests: no import cycle inside it (deferred imports included), no function over 60
lines, nothing below the orchestration layer imports it, and no notebook names an attack or asserts a threshold
(those live in the protocol records)."""
import ast
import json
from pathlib import Path

from backdoor_repro.attacks import ATTACKS
from backdoor_repro.paths import PACKAGE_DIR, project_root

MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package modules ``name`` imports, at any depth of its code (``from . import x`` names module x)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            found |= set(named) | ({target} if len(named) < len(node.names) and target in modules else set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_nothing_below_the_orchestration_layer_imports_it():
    modules = _modules()
    below = {n for n in modules if not n.startswith("backdoor_repro.orchestration")}
    offenders = {n: sorted(i for i in _imports(n, modules[n], modules) if i.startswith("backdoor_repro.orchestration"))
                 for n in below}
    assert not {n: v for n, v in offenders.items() if v}


def test_no_function_is_over_60_lines():
    long = []
    for folder in (PACKAGE_DIR, project_root() / "scripts"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long


def test_notebooks_name_no_attack_and_assert_no_threshold():
    """Attack lists and thresholds come from the protocol records; a notebook keeps narrative, calls and plots."""
    found = []
    for notebook in sorted((project_root() / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
                continue
            tree = ast.parse("\n".join(line for line in "".join(cell["source"]).splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in ATTACKS:
                    found.append(f"{notebook.name}: attack {node.value!r}")
                if isinstance(node, ast.Assert):
                    found.append(f"{notebook.name}: assert at line {node.lineno}")
    assert not found
