"""The package's floor plan: every module sits in a room or is a small shared helper
at the top, imports run one way between the rooms, and the module paths from before
the rooms existed still import (speechbrain_s4m/_moved.py)."""

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

from speechbrain_s4m._moved import MOVED

PACKAGE = Path(__file__).resolve().parents[1] / "speechbrain_s4m"
ROOMS = {"lobes", "data", "training", "inference", "export", "benchmark"}
ALIASES = {old.rsplit(".", 1)[1] for old in MOVED}
# what may stay at the top: the package's own files, small shared helpers, the demo
TOP_LEVEL = {"__init__", "_moved", "cli", "frame_geometry", "metrics", "resources", "demo"} | ALIASES

# room -> what it must never import (the demo is the one runner that uses every room)
FORBIDDEN = {
    "lobes": {"data", "training", "inference", "export", "benchmark", "demo"},
    "data": {"lobes", "training", "inference", "export", "benchmark", "demo"},
    "inference": {"training", "benchmark", "demo"},
    "export": {"training", "benchmark", "demo"},
    "training": {"benchmark", "demo"},
    "helpers": ROOMS | {"demo"},
}


def room_of(module: str) -> str:
    """``speechbrain_s4m.inference.streaming`` -> ``inference``; a top-level module
    -> its name (``metrics``, ``demo``)."""
    return module.split(".")[1]


def imported_modules(path: Path, package: str) -> Set[str]:
    """Every ``speechbrain_s4m`` module that the file ``path`` of ``package`` imports,
    at the top or inside a function, absolute or relative (``from speechbrain_s4m
    import x`` counts as ``speechbrain_s4m.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if base == "speechbrain_s4m")
    return {name for name in found if name.startswith("speechbrain_s4m.")}


def import_graph() -> Dict[str, Set[str]]:
    """module file (relative to the package) -> the rooms and top-level modules it imports."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE)
        package = ".".join(("speechbrain_s4m",) + module.parts[:-1])
        graph[str(module)] = {room_of(name) for name in imported_modules(path, package)}
    return graph


def violations(graph: Dict[str, Set[str]]) -> List[str]:
    """The imports of ``graph`` against :data:`FORBIDDEN`, one line each."""
    wrong = []
    for module, imports in graph.items():
        parts = Path(module).parts
        if len(parts) > 1:
            room = parts[0]
        elif Path(module).stem in {"demo", "_moved"} | ALIASES:
            continue
        else:
            room = "helpers"
        for target in sorted(imports & FORBIDDEN.get(room, set())):
            wrong.append(f"{module} ({room}) imports speechbrain_s4m.{target}")
    return wrong


def test_every_module_is_in_a_room_or_a_named_helper():
    loose = sorted(path.name for path in PACKAGE.glob("*.py") if path.stem not in TOP_LEVEL)
    loose += sorted(
        path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name not in ROOMS | {"__pycache__"}
    )
    assert loose == [], f"not in a room ({', '.join(sorted(ROOMS))}) nor a named top-level helper: {loose}"


def test_imports_run_one_way():
    wrong = violations(import_graph())
    assert wrong == [], "imports against the floor plan:\n" + "\n".join(wrong)


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    """The floor plan rests on the walk: an import inside a function, a relative one
    and a ``from speechbrain_s4m import`` are seen, and each breaks the plan."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from speechbrain_s4m import metrics\n"
        "def f():\n    from ..training import brain\n    import speechbrain_s4m.export.graph_folder\n"
    )
    seen = imported_modules(probe, "speechbrain_s4m.lobes")
    assert seen >= {"speechbrain_s4m.metrics", "speechbrain_s4m.training", "speechbrain_s4m.export.graph_folder"}
    graph = {"lobes/probe.py": {room_of(name) for name in seen}, "metrics.py": {"inference"}}
    assert violations(graph) == [
        "lobes/probe.py (lobes) imports speechbrain_s4m.export",
        "lobes/probe.py (lobes) imports speechbrain_s4m.training",
        "metrics.py (helpers) imports speechbrain_s4m.inference",
    ]


def test_old_module_paths_are_the_new_modules():
    """In a fresh process (no module imported yet): each old path imports, is the very
    module it moved to, and warns once, naming the new path."""
    script = (
        "import importlib, json, sys, warnings\n"
        "from speechbrain_s4m._moved import MOVED\n"
        "out = {}\n"
        "for old, new in MOVED.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    out[old] = [module is sys.modules[new], [str(w.message) for w in caught if w.category is FutureWarning]]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    for old, new in MOVED.items():
        same, warned = seen[old]
        assert same, f"{old} is not {new}"
        assert len(warned) == 1 and new in warned[0] and "0.3.0" in warned[0], (old, warned)


def test_old_yaml_paths_still_load():
    """A recipe YAML written before the move names the early-stopping counter by its
    old path; it loads, as the same class."""
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_s4m.training.speechbrain_compat import EarlyStoppingCounter

    text = (
        "counter: !new:speechbrain_s4m.speechbrain_compat.EarlyStoppingCounter\n"
        "    limit: 3\n    limit_to_stop: 2\n    limit_warmup: 0\n    direction: min\n"
    )
    assert type(load_hyperpyyaml(text)["counter"]) is EarlyStoppingCounter
