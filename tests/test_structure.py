"""The package's shape: dependencies point one way (no import cycle, deferred imports included), the light
modules stay light, and bad input to the command line is refused before anything starts."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minima"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports anywhere in its text (inside functions too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a cycle or a knot of them."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_deferred_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_round_a_cycle():
    graph = import_graph()
    assert {"minima.runs", "minima.lock", "minima.runner", "minima.sweeps.plan"} <= set(graph)
    assert cycles(graph) == []


@pytest.mark.parametrize("module", ["minima.config", "minima.runs", "minima.compare"])
def test_light_modules_load_no_solver(module):
    heavy = ("pyhessian", "torch_optimizer", "pytorch_optimizer", "minima.analysis", "minima.curvature",
             "minima.projected", "minima.krylov", "minima.landscape")
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {heavy!r} or m in {heavy!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _main(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "minima", *argv], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "1.5", "x"])
def test_a_bad_seed_is_one_line_before_anything_starts(tmp_path, seed):
    out = _main("run", "--seeds", seed, "--results-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"error: argument --seeds: seed must be an integer from 0 to 4294967295, got {seed!r}\n"
    assert not (tmp_path / "runs").exists()


def test_status_of_a_folder_that_does_not_exist_says_so(tmp_path):
    out = _main("status", "--results-dir", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and out.stderr.startswith(f"error: no study folder {tmp_path / 'nowhere'}")
