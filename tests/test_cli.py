"""The `rnnc` command line: each subcommand runs as a subprocess with its output and exit
code checked; user mistakes end in one line on stderr and exit code 2, never a
traceback; every subcommand's --help lists its options."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from rnncompiler.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = os.path.join(ROOT, "tests", "cells.py")
PNG = b"\x89PNG\r\n\x1a\n"


def rnnc(*args, cwd=None):
    """Run `python -m rnncompiler.cli ARGS` (what the rnnc script runs)."""
    return subprocess.run([sys.executable, "-m", "rnncompiler.cli"] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cell_file(tmp_path_factory):
    """A file with a correct cell and one whose hand-written derivative is wrong."""
    path = tmp_path_factory.mktemp("cells") / "my_cells.py"
    path.write_text(textwrap.dedent("""\
        import sympy
        import rnncompiler as rc

        @rc.cell(states=("h",))
        def leaky(x, h, p):
            a = rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))
            return {"h": 0.5 * h + 0.5 * a}

        # the derivative of tanh is 1 - y**2, not 2 - 2*y**2
        wrong_tanh = rc.activation("wrong_tanh", forward=lambda u: sympy.tanh(u),
                                   derivative=lambda u, y: 2 - 2 * y ** 2)

        @rc.cell(states=("h",))
        def wrong(x, h, p):
            return {"h": wrong_tanh(p.linear("W", rc.concat(h, x)))}
        """))
    return str(path)


# ---------------------------------------------------------------- the subcommands

def test_the_gradient_flow_plot_leaves_zero_norms_out():
    """A zero gradient norm (a row past its length, or a state the loss does not reach) is
    a gap in the line: drawn at 1e-300 it stretched the log axis over 300 decades."""
    plt = pytest.importorskip("matplotlib.pyplot")
    import numpy as np
    from rnncompiler.diagnostics import GradientFlow
    flow = GradientFlow({"h": np.array([0.0, 1e-3, 0.1, 1.0]), "c": np.zeros(4)}, {}, "test")
    ax = flow.plot()
    low, high = ax.get_ylim()
    assert 1e-5 < low < 1e-3 and 1.0 < high < 10.0
    assert [ln.get_label() for ln in ax.get_lines()] == ["h", "c (0 at every step)"]
    plt.close("all")


@pytest.mark.slow
def test_check_passes_with_exit_0_and_draws_the_gradient_flow(cell_file, tmp_path):
    plot = tmp_path / "flow.png"
    proc = rnnc("check", cell_file + ":leaky", "--hidden-size", "3", "--plot", str(plot),
                "--plot-steps", "12")
    assert proc.returncode == 0, proc.stderr
    assert "leaky" in proc.stdout.splitlines()[0] and ": OK" in proc.stdout
    assert re.search(r"^\s+W\s+\S+\s+ok", proc.stdout, re.M)
    assert "wrote %s" % plot in proc.stdout
    assert plot.read_bytes()[:8] == PNG


def test_check_of_a_wrong_derivative_exits_1(cell_file):
    proc = rnnc("check", cell_file + ":wrong")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stderr


def test_show_prints_the_equations_and_latex():
    proc = rnnc("show", CELLS + ":lstm")
    assert proc.returncode == 0, proc.stderr
    assert "Forward (step t):" in proc.stdout and "δc[t-1] += f[t]*δc[t]" in proc.stdout
    assert "f[t] = σ(a_f[t])" in proc.stdout          # the gate by the name the cell gives it
    proc = rnnc("show", CELLS + ":two_sizes", "--latex", "--size", "P=3", "--size", "O=2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(r"\begin{align*}") == 2 and r"\delta" in proc.stdout


def test_export_writes_the_c_pair(tmp_path):
    out = tmp_path / "out"
    proc = rnnc("export", CELLS + ":gru", "-o", str(out), "--dtype", "float64", "--name",
                "my_gru", "--hidden-size", "5")
    assert proc.returncode == 0, proc.stderr
    assert "wrote %s and %s" % (out / "my_gru.h", out / "my_gru.c") in proc.stdout
    header = (out / "my_gru.h").read_text()
    assert "int my_gru_forward(int T, int B, const double *params" in header
    assert "Compiled for I = 3, H = 5" in header
    proc = rnnc("export", CELLS + ":elman", "-o", str(out), "--blas")
    assert proc.returncode == 0, proc.stderr
    assert "#define RNNC_BLAS 1" in (out / "elman.c").read_text()   # csrc/gemm.h: any CBLAS
    assert "float *params" in (out / "elman.h").read_text()


@pytest.mark.slow
def test_graph_writes_dot_svg_and_png(tmp_path):
    dot, svg, png = tmp_path / "g.dot", tmp_path / "g.svg", tmp_path / "u.png"
    proc = rnnc("graph", CELLS + ":lstm", "--unroll", "3", "-o", str(dot))
    assert proc.returncode == 0, proc.stderr
    text = dot.read_text()
    assert text.startswith('digraph "lstm" {') and text.rstrip().endswith("}")
    for t in range(3):
        assert 'subgraph "cluster_t%d"' % t in text
    # each parameter is one node with an edge into every step that uses it
    assert text.count('"W_f" [label=') == 1
    assert len(re.findall(r'^  "W_f" -> "n\d+@\d"', text, re.M)) == 3
    assert "f[2] = σ(a_f[2])" in text and "c[-1]" in text
    proc = rnnc("graph", CELLS + ":gru", "-o", str(svg), "--level", "fused")
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in svg.read_text()[:500]
    proc = rnnc("graph", CELLS + ":elman", "--unroll", "2", "-o", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == PNG and "unrolled over T = 2" in proc.stdout


def test_step_graph_levels_differ_as_described(tmp_path, capsys):
    counts = {}
    for level in ("ops", "named", "fused"):
        assert main(["graph", CELLS + ":lstm", "--level", level, "-o",
                     str(tmp_path / (level + ".dot"))]) == 0
        counts[level] = int(re.search(r"\((\d+) nodes", capsys.readouterr().out).group(1))
        text = (tmp_path / (level + ".dot")).read_text()
        assert ("o[t] = σ(a_o[t])" in text) == (level != "fused")      # the cell's names
        assert bool(re.search(r'label="v\d+\[t\] = c\[t-1\]\*f\[t\]"', text)) == (level == "ops")
    assert counts["ops"] > counts["named"] > counts["fused"]


def test_the_named_graph_keeps_a_named_scalar():
    """A value the cell names stays a node of the default graph level, a scalar too
    (rc.mean of a vector): it is kept, not taken for a state."""
    import rnncompiler as rc
    from rnncompiler.cli.graphs import step_graph

    @rc.cell(states=("h",))
    def centred(x, h, p):
        a = p.linear("W", rc.concat(h, x), bias="b")
        m = rc.mean(a)
        return {"h": rc.tanh(a - m)}
    g, names = step_graph(centred, {"I": 3, "H": 4}, "named")
    assert "m[t]" in {text for text, _ in names.values()}
    assert [s for s, _ in g.new_states] == ["h"]


def test_a_merged_linear_map_is_labelled_with_all_its_terms():
    """PyTorch's form W_ii x + W_hi h + b_ii + b_hi lowers to one linear node: its label
    names every product and bias, not only the first."""
    import rnncompiler as rc
    from rnncompiler.cli.graphs import node_label, step_graph
    g, names = step_graph(rc.cells.lstm_torch, {"I": 3, "H": 4}, "fused")
    labels = [node_label(g, names, n) for n in g if g[n].op == "linear"]
    assert len(labels) == 4 and all(label.count(" + ") >= 2 for label in labels), labels
    assert any("W_ii x[t] + W_hi h[t-1]" in label for label in labels), labels


@pytest.mark.slow
def test_bench_times_rnncompiler_and_torch_side_by_side():
    proc = rnnc("bench", CELLS + ":lstm", "--hidden", "4", "--steps", "3", "--batch", "2",
                "--repeats", "2", "--dtype", "float64")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"rnncompiler\s+median\s+[\d.]+ ms", proc.stdout)
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch is not installed" in proc.stdout
    else:
        assert "peer torch.nn.LSTM: the cell computes the same function" in proc.stdout
        assert re.search(r"torch\.nn\.LSTM\s+median\s+[\d.]+ ms", proc.stdout)


def test_a_torch_peer_only_for_cells_that_compute_what_torch_computes():
    from rnncompiler.cli.bench import torch_peer
    import cells
    import rnncompiler as rc

    @rc.cell(states=("h", "c"), output="h")
    def renamed(x, h, c, p):        # another order of gates, other names: still an LSTM
        z = rc.concat(h, x)
        o = rc.sigmoid(p.linear("U_o", z, bias="c_o"))
        g = rc.tanh(p.linear("U_g", z, bias="c_g"))
        f = rc.sigmoid(p.linear("U_f", z, bias="c_f"))
        i = rc.sigmoid(p.linear("U_i", z, bias="c_i"))
        c_next = f * c + i * g
        return {"h": o * rc.tanh(c_next), "c": c_next}

    @rc.cell(states=("h", "c"), output="h")
    def no_forget(x, h, c, p):      # one operation differs: no peer
        z = rc.concat(h, x)
        i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
        g = rc.tanh(p.linear("W_g", z, bias="b_g"))
        o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
        c_new = c + i * g
        return {"h": o * rc.tanh(c_new), "c": c_new}

    sizes = {"I": 3, "H": 4}
    assert torch_peer(cells.lstm, sizes) == "lstm" and torch_peer(renamed, sizes) == "lstm"
    assert torch_peer(cells.gru, sizes) == "gru"
    assert torch_peer(rc.cells.gru_torch, sizes) == "gru" and torch_peer(rc.cells.lstm_np, sizes) == "lstm"
    assert torch_peer(rc.cells.gru, sizes) is None      # reset before the product: not torch's GRU
    for cell in (cells.elman, cells.peephole_lstm, cells.gated_bump, no_forget):
        assert torch_peer(cell, sizes) is None, cell.name


@pytest.mark.slow
def test_bench_without_a_peer_times_rnncompiler_alone(capsys):
    assert main(["bench", CELLS + ":elman", "--hidden", "4", "--steps", "3", "--batch", "2",
                 "--repeats", "1", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "no PyTorch peer" in out or "not installed" in out
    assert re.search(r"rnncompiler\s+median", out) and "torch.nn" not in out.split("\n", 2)[2]


@pytest.mark.slow
def test_demo_runs_small():
    proc = rnnc("demo", "--hidden", "4", "--steps", "3", "--batch", "2", "--repeats", "1",
                "--train-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    assert "δc[t-1] += " in proc.stdout and ": OK" in proc.stdout and "forward+backward" in proc.stdout


def test_the_installed_script_and_module_cell_names():
    script = os.path.join(os.path.dirname(sys.executable), "rnnc")
    if not os.path.exists(script):
        pytest.skip("rnnc is not installed next to this Python")
    pytest.importorskip("rnncompiler.cells")
    proc = subprocess.run([script, "show", "rnncompiler.cells:gru"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "δh[t-1] +=" in proc.stdout


# ---------------------------------------------------------------- mistakes

def test_user_errors_are_one_line_with_exit_2_as_a_subprocess(cell_file):
    for args, words in [(("check", "no/such/file.py:cell"), "no such file"),
                        (("export", cell_file + ":leaky", "-o", os.devnull + "/x", "--name", "int"),
                         "C keyword")]:
        proc = rnnc(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnc: ") and words in lines[0], proc.stderr


@pytest.mark.parametrize("args, words", [
    (["check", "nocolon"], "expected path/to/file.py:name"),
    (["check", "{cells}:nope"], "has no cell named 'nope' (cells there: leaky, wrong)"),
    (["check", "rnncompiler.no_such_module:lstm"], "cannot import rnncompiler.no_such_module"),
    (["show", "{cells}:leaky", "--size", "P3"], "--size: expected NAME=N"),
    (["show", "{tests}:two_sizes"], "size 'P' is not bound"),
    (["show", "{broken}:x"], "broken.py:2"),
    (["show", "{raises}:x"], "running"),
    (["export", "{cells}:leaky", "-o", "{tmp}", "--name", "_x"], "starts with '_'"),
    (["export", "{cells}:leaky", "-o", "{tmp}", "--name", "a-b"], "not a valid name"),
    (["graph", "{cells}:leaky", "-o", "{tmp}/g.txt"], "expected a file ending in .dot, .svg, .png"),
    (["graph", "{cells}:leaky", "-o", "{tmp}/missing/dir/g.dot"], "No such file"),
])
def test_user_errors_name_the_problem(args, words, cell_file, tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import rnncompiler as rc\ndef (:\n")
    raises = tmp_path / "raises.py"
    raises.write_text("raise RuntimeError('boom')\n")
    args = [a.format(cells=cell_file, tests=CELLS, broken=broken, raises=raises, tmp=tmp_path)
            for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rnnc: "), err
    assert words in err, err


def test_bad_option_values_are_usage_errors(capsys):
    for args in (["check", "x.py:c", "--hidden-size", "0"], ["export", "x.py:c"],
                 ["graph", "x.py:c", "-o", "g.dot", "--unroll", "-1"], ["bench", "x.py:c", "--torch", "keras"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_help_of_every_subcommand_lists_its_options(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(sub.choices) == ["bench", "cache", "check", "demo", "export", "graph", "show"]
    for name, p in sub.choices.items():
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        if name == "demo":        # the demo's own options
            assert "--hidden" in out and "make demo" in out
            continue
        assert p.description and p.description.split()[0] in out
        for action in p._actions:
            for opt in action.option_strings:
                assert opt in out, (name, opt)
            if action.option_strings and action.help != "show this help message and exit":
                assert action.help, (name, action.option_strings)


# ---------------------------------------------------------------- graphs and derivations

def test_named_level_keeps_the_cells_names_and_computes_the_same():
    """The graph of the derivations page: the gates keep the names the cell's code gives
    them, and it computes exactly what the traced graph computes (numpy reference)."""
    import numpy as np
    from rnncompiler.cli.graphs import step_graph, equations_of
    from rnncompiler.compiler.graph import build_graph
    from rnncompiler.compiler.evaluator import evaluate
    from cells import lstm, two_sizes
    for cell, sizes in ((lstm, {"I": 3, "H": 4}), (two_sizes, {"I": 3, "H": 4, "P": 3, "O": 2})):
        g, names = step_graph(cell, sizes, "named")
        ref = build_graph(cell.spec, sizes)
        rng = np.random.default_rng(0)
        params = {n: rng.standard_normal(s) for n, s in ref.params}
        x = rng.standard_normal((4, 2, 3))
        y0, s0 = evaluate(ref, params, x)
        y1, s1 = evaluate(g, params, x)
        assert np.allclose(y0, y1, rtol=1e-12, atol=0)
        assert all(np.allclose(s0[k], s1[k], rtol=1e-12, atol=0) for k in s0)
    g, names, eqs = equations_of(lstm, {"I": 3, "H": 4})
    shown = {lhs for lhs, _, _ in eqs.forward}
    assert {"f[t]", "i[t]", "g[t]", "o[t]", "c[t]", "h[t]"} <= shown
    back = ["%s %s %s" % eq for eq in eqs.backward]
    assert "δo[t] += δh[t]*tanh(c[t])" in back
    assert "δc[t] += o[t]*δh[t]*(1 - tanh(c[t])²)" in back
    assert "δc[t-1] += f[t]*δc[t]" in back and "δW_f += Σ_t δa_f[t] z[t]ᵀ" in back


def test_derivations_page_and_pictures_are_current():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "gen_derivations.py"),
                           "--check"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_derivations_check_fails_on_a_stale_block_or_a_missing_picture(tmp_path, capsys):
    import shutil
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    try:
        import gen_derivations
    finally:
        sys.path.pop(0)
    page = tmp_path / "derivations.md"
    shutil.copy(os.path.join(ROOT, "docs", "derivations.md"), page)
    shutil.copytree(os.path.join(ROOT, "docs", "img"), tmp_path / "img")
    assert gen_derivations.main(["--check", "--file", str(page)]) == 0
    text = page.read_text()
    page.write_text(text.replace("δf[t] += c[t-1]*δc[t]", "δf[t] += c[t]*δc[t]"))
    assert gen_derivations.main(["--check", "--file", str(page)]) == 1
    page.write_text(text)
    (tmp_path / "img" / "derivations-gru.png").unlink()
    assert gen_derivations.main(["--check", "--file", str(page)]) == 1
    assert "pictures: gru" in capsys.readouterr().err
    assert gen_derivations.main(["--file", str(page)]) == 0           # regenerates
    assert (tmp_path / "img" / "derivations-gru.png").read_bytes()[:8] == PNG
    assert gen_derivations.main(["--check", "--file", str(page)]) == 0


def test_demo_help_names_its_command_and_every_option():
    proc = rnnc("demo", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: rnnc demo ")
    for option in ("--hidden", "--steps", "--batch", "--repeats", "--train-seconds"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(option))
        block = proc.stdout[proc.stdout.index(line):].split("\n  -")[0]
        assert "default" in block or "skip" in block, option


def test_an_unbound_size_is_advised_in_the_command_lines_terms():
    proc = rnnc("show", "rnncompiler.cells:lstm_proj")
    assert proc.returncode == 2
    assert "--size P=N" in proc.stderr and "rc.compile" not in proc.stderr


def test_the_demo_credits_its_cell_to_its_own_file():
    """The demo runs as `python -m rnncompiler.demo`: its cell's lines are demo.py's, not
    runpy's."""
    import rnncompiler as rc
    from rnncompiler import demo
    report = str(rc.gradcheck(demo.lstm, T=2, B=1))
    assert "(demo.py:" in report and "runpy" not in report
