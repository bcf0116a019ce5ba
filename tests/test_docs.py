"""The documentation's code runs: every ```python block of each docs page, in order, as
one script; and the generated blocks of docs/bptt.md (equations) and docs/dsl.md (the
activation table) are up to date."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = sorted(f for f in os.listdir(DOCS) if f.endswith(".md"))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path):
    with open(os.path.join(DOCS, page)) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    if not blocks:
        pytest.skip("no code on this page")
    script = tmp_path / ("doc_" + page.replace(".md", ".py").replace("-", "_"))
    script.write_text("\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_generated_equations_in_bptt_page_are_current():
    proc = subprocess.run([sys.executable, os.path.join(DOCS, "gen_bptt.py"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_generated_activation_table_in_dsl_page_is_current():
    proc = subprocess.run([sys.executable, os.path.join(DOCS, "gen_activations.py"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
