"""docs/architecture.md matches the package it describes: it quotes the layers contracts
of pyproject.toml as they are, and its module tables name every module of the compiler
and the runtime, and none that does not exist."""
import itertools
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")          # Python >= 3.11 reads pyproject.toml itself


ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "architecture.md").read_text()


def _contract_layers():
    with open(ROOT / "pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return [c["layers"] for c in contracts if c["type"] == "layers"]


def _quoted_layers():
    """The `layers = [...]` lists of the page's toml blocks, in order."""
    blocks = re.findall(r"```toml\n(.*?)```", PAGE, re.S)
    return [tomllib.loads(b)["layers"] for b in blocks if "layers" in b]


def test_the_page_quotes_every_layers_contract_as_it_is():
    assert len(_contract_layers()) == 2
    assert _quoted_layers() == _contract_layers()


def _modules(package):
    """The modules (x.py) and subpackages (x/) of a package, __init__.py left out."""
    root = ROOT / "rnncompiler" / package
    return ({p.name for p in root.glob("*.py") if p.name != "__init__.py"}
            | {p.name + "/" for p in root.iterdir() if (p / "__init__.py").exists()})


def _first_column(after):
    """The backquoted names in the first column of the first table after the text `after`."""
    lines = PAGE.split(after, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2:])
    return {n for row in rows for n in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_the_compiler_table_names_every_module_and_no_other():
    named = _first_column("Every module of `rnncompiler/compiler/`")
    assert {n for n in named if "/" not in n.rstrip("/")} == _modules("compiler")
    assert {n[len("codegen/"):] for n in named
            if n.startswith("codegen/") and n != "codegen/"} == _modules("compiler/codegen")


def test_the_runtime_table_names_every_module_and_no_other():
    assert _first_column("The runtime,\n`rnncompiler/runtime/`") == _modules("runtime")


def test_the_table_parser_reads_the_rows():
    """The checks above compare real rows, not two empty sets."""
    named = _first_column("Every module of `rnncompiler/compiler/`")
    assert "pipeline.py" in named and "codegen/layout.py" in named and len(named) >= 25
