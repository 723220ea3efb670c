"""The package's shape: dependencies point one way, no import cycles, and torch stays out of the client,
the preprocess model and the served benchmark path. Fast: reads source files, imports in subprocesses."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

# resnets (models, data, contract) <- engines <- client / server <- export <- benchmarks <- the console script.
# A package may import its own modules and those of packages on lower layers, never sideways or up.
LAYERS = {
    "resnet_serve": 0,  # errors, cli, settings
    "resnet_serve.resnets": 1,
    "resnet_serve.engines": 2,
    "resnet_serve.client": 3,
    "resnet_serve.server": 3,
    "resnet_serve.export": 4,
    "resnet_serve.benchmarks": 5,
    "resnet_serve.__main__": 6,
}
TOP_LEVEL_NAMES = {"resnets", "engines", "export", "server", "client", "benchmarks"}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by name, from the checkout's folders."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        root = REPO_ROOT / folder
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """The project modules a file imports (at any depth of the file), and any bare top-level project imports."""
    targets, bare = set(), []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in TOP_LEVEL_NAMES:
                bare.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
            if name in known:
                targets.add(name)
    return targets, bare


def layer(module: str) -> tuple[str, int]:
    package = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    if package == "resnet_serve" and module.split(".")[1:2] and f"resnet_serve.{module.split('.')[1]}" in LAYERS:
        package = f"resnet_serve.{module.split('.')[1]}"
    return package, LAYERS[package]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges, bare = {}, []
    for name, path in known.items():
        targets, found = imports(path, known)
        edges[name] = targets - {name}  # a package's lazy attribute import of its own submodule names itself
        bare += found
    assert not bare, "imports must go through resnet_serve:\n" + "\n".join(bare)
    return edges


def test_every_folder_is_found():
    found = modules()
    for module in (
        "resnet_serve.cli",
        "resnet_serve.engines.gpu.plan",
        "resnet_serve.client.core",
        "resnet_serve.server.models.preprocess",
    ):
        assert module in found
    assert len(found) > 50


def test_dependencies_point_one_way():
    wrong = []
    for source, targets in graph().items():
        package, level = layer(source)
        for target in targets:
            target_package, target_level = layer(target)
            if target_package != package and target_level >= level:
                wrong.append(f"{source} ({package}) imports {target} ({target_package})")
    assert not wrong, "dependencies pointing the wrong way:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_files():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_above_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert layer("resnet_serve.engines.gpu.plan") == ("resnet_serve.engines", 2)
    assert layer("resnet_serve.errors") == ("resnet_serve", 0)
    assert layer("resnet_serve.__main__") == ("resnet_serve.__main__", 6)


TORCH_FREE = {
    "the client and its CLI": "import resnet_serve.client, resnet_serve.client.cli, resnet_serve.client.__main__",
    "the Triton preprocess model": "import resnet_serve.server.models.preprocess",
    "the Triton classifier model (CPU engines)": "import resnet_serve.server.models.classifier",
    "the served benchmark path": "import resnet_serve.benchmarks.cli, resnet_serve.benchmarks.served, "
    "resnet_serve.benchmarks.accuracy, resnet_serve.benchmarks.load, resnet_serve.benchmarks.transport",
    "the engine layer": "import resnet_serve.engines, resnet_serve.engines.onnxruntime, resnet_serve.engines.openvino",
    "the server launcher and index": "import resnet_serve.server, resnet_serve.server.cli, resnet_serve.server.index",
    "the export summary and repository writer": "import resnet_serve.export.summary, resnet_serve.export.repository",
}
# inside Triton, the stub provides triton_python_backend_utils; here a stand-in module lets the import run
STUB = "import sys, types; sys.modules['triton_python_backend_utils'] = types.ModuleType('triton_python_backend_utils')"


@pytest.mark.parametrize("what", TORCH_FREE)
def test_imports_leave_torch_out(what):
    code = (
        f"{STUB}; {TORCH_FREE[what]}; import sys; heavy = sorted({{'torch', 'nncf'}} & set(sys.modules)); print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"{what} imports {result.stdout.strip()}"


def test_the_torch_check_can_fail():
    code = f"{STUB}; import resnet_serve.engines.pytorch; import sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
