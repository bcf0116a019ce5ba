"""Every example, the demo and the README's code run (with small settings)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {
    "quickstart.py": ["--hidden", "4", "--steps", "5", "--batch", "2"],
    "custom_gate.py": ["--iters", "100", "--hidden", "4"],
    "stacked_cell.py": ["--layers", "2", "--hidden", "8", "--steps", "5", "--batch", "2"],
    "esn_mackey_glass.py": ["--hidden", "50", "--train", "500", "--test", "200"],
    "tdnn.py": ["--delays", "3", "--iters", "60", "--steps", "10", "--batch", "4"],
    "clockwork.py": ["--iters", "40", "--module", "2", "--steps", "16"],
    "zoneout_lm.py": ["--epochs", "1", "--hidden", "16", "--chars", "3000", "--batch", "8",
                      "--k1", "20"],
    "depth_gated.py": ["--iters", "40", "--hidden", "6", "--T", "10", "--batch", "8"],
    "conditioned_waves.py": ["--iters", "30", "--hidden", "8", "--steps", "16", "--batch", "8"],
    "gate_variants.py": ["--hidden", "8", "--steps", "5", "--batch", "2", "--repeats", "1"],
    "char_lm.py": ["--hidden", "16", "--batch", "8", "--k1", "20", "--k2", "30", "--epochs", "1",
                   "--sample", "40"],
    "adding_problem.py": ["--T", "10", "--hidden", "8", "--iters", "60", "--batch", "16"],
    "reverse_seq2seq.py": ["--max-len", "4", "--hidden", "16", "--iters", "40", "--batch", "16"],
    "classify.py": ["--hidden", "8", "--iters", "200", "--batch", "16", "--lr", "0.02"],
    "torch_char_lm.py": ["--hidden", "16", "--embed", "8", "--batch", "8", "--bptt", "20",
                         "--epochs", "1", "--sample", "40"],
}


def run(args):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_every_example_has_small_settings():
    examples = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py"))
    assert examples == sorted(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs(name):
    out = run([os.path.join("examples", name)] + SMALL[name])
    assert "FAILED" not in out


@pytest.mark.slow
def test_demo_runs():
    out = run(["-m", "rnncompiler.demo", "--hidden", "8", "--steps", "5", "--batch", "2",
               "--repeats", "1", "--train-seconds", "1"])
    assert "gradcheck against central finite differences" in out and ": OK" in out
    assert "δc[t-1] += " in out and "forward+backward" in out
    assert "--- sample, temperature 1.0 ---\nShall I compare " in out


def test_readme_code_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks
    for block in blocks:
        run(["-c", block])
