"""The benchmarks run (in their --quick mode, against the peers installed) and print a ratio
for every case: the numbers themselves are read in docs/performance.md, not asserted here."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow      # the benchmark scripts run whole

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def run_bench(*args):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, args[0]), "--quick"] + list(args[1:]),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_speed_prints_every_case_with_its_ratio():
    pytest.importorskip("torch")
    out = run_bench("bench_speed.py", "--no-compile")
    for case in ("LSTM H=I=32", "LSTM B=1 H=I=64", "GRU H=I=128", "peephole LSTM H=I=32"):
        assert re.search(r"^%s .*\s\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\s+<= " % re.escape(case), out, re.M), (case, out)
    assert re.search(r"^core: .* GFLOP/s; load \d", out, re.M), out
    assert re.search(r"checkpoint=10 vs plain.* time \d+\.\d+x", out), out
    assert re.search(r"2 threads vs 1.*: \d+\.\d+x", out), out


def test_bench_lstm_and_the_torch_adapter_bench_print_their_tables():
    pytest.importorskip("torch")
    for script in ("bench_lstm.py", "bench_torch_adapter.py"):
        out = run_bench(script)
        assert re.search(r"^\s+32\s+[\d.]+\s.*\d\.\d\dx\s*$", out, re.M), (script, out)


def test_bench_compile_prints_each_depth_against_the_lstm():
    out = run_bench("bench_compile.py")
    assert re.search(r"^LSTM .*\(peer\)\s+[\d.]+ .*1\.00x$", out, re.M), out
    for depth in (3, 10):
        assert re.search(r"^tanh chain N=%d .*\s\d+\.\d\dx$" % depth, out, re.M), out


def test_bench_stream_prints_ns_per_step_of_every_side():
    out = run_bench("bench_stream.py")
    assert re.search(r"^core: .*GFLOP/s; load", out, re.M), out
    for H in (8, 32):
        assert re.search(r"^lstm\s+%d\s+\d+ / \d+\s+\d+ / \d+\s+[\d.]+\s+\d+ / \d+\s+[\d.]+"
                         r"(\s+\d+ / \d+){3}" % H, out, re.M), out


def test_bench_scan_prints_both_state_linear_ratios():
    out = run_bench("bench_scan.py")
    assert re.search(r"^core: .*GFLOP/s; load", out, re.M), out
    assert re.search(r"^tuning: float32: ", out, re.M), out
    assert re.search(r"^minGRU \(a\) vs GRU \(b\).*\s\d+\.\d\d\s+\(min\s+\d+\.\d\d\)\s+target <= 0\.5$",
                     out, re.M), out
    assert re.search(r"^minGRU at B=1: 2 threads are \d+\.\d\dx as fast as 1", out, re.M), out
