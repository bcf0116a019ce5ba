"""The package's shape: layers that point one way (the import-linter contract in
pyproject.toml), no import cycles, lazy or not, and no module reaching for another's
private names."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rnncompiler"


def _import_graph():
    """module -> modules it imports anywhere in its file (function-level imports too)."""
    graph = grimp.build_graph("rnncompiler", cache_dir=None)
    g = nx.DiGraph()
    for m in graph.modules:
        g.add_node(m)
        g.add_edges_from((m, imp) for imp in graph.find_modules_directly_imported_by(m))
    return g


def test_the_import_linter_contract_is_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_there_is_no_import_cycle():
    g = _import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, "import cycles: %s" % cycles


def test_the_cycle_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The check above would miss the lazy back-edges it exists for if grimp read only
    module-level imports: a package whose only cycle is inside a function is caught."""
    pkg = tmp_path / "lazycycle"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("lazycycle", cache_dir=None)
    assert "lazycycle.a" in graph.find_modules_directly_imported_by("lazycycle.b")


def _private_imports(path, module):
    """(line, name) of every `from rnncompiler... import _x` and `mod._x` where mod is a
    package module imported by name, in one file."""
    tree = ast.parse(path.read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("rnncompiler")):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append((node.lineno, a.name))
                elif a.asname or a.name:
                    aliases[a.asname or a.name] = a.name
    package_modules = {p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and aliases[node.value.id] in package_modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((node.lineno, "%s.%s" % (node.value.id, node.attr)))
    return found


def test_no_module_uses_another_modules_private_names():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        bad += ["%s:%d %s" % (path.relative_to(ROOT), line, name)
                for line, name in _private_imports(path, path.stem)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_private_name_check_finds_one(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .pipeline import _dtype_name\nfrom . import build\nbuild._manifest(1)\n")
    assert [n for _, n in _private_imports(f, "m")] == ["_dtype_name", "build._manifest"]


@pytest.mark.parametrize("layer", ["rnncompiler.compiler", "rnncompiler.runtime"])
def test_the_contract_names_packages_that_exist(layer):
    """A renamed package would leave the contract guarding nothing."""
    text = (ROOT / "pyproject.toml").read_text()
    assert '"%s"' % layer in text
    assert (ROOT / layer.replace(".", os.sep) / "__init__.py").exists()
