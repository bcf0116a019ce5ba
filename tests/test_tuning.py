"""Kernels tuned to the core: the variants the runtime object holds, the autotuning run's
decision and its table, RNNC_TUNING, and every variant and hoisted path computing the
same gradients (finite differences and the reference evaluator, via rc.gradcheck)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler import build, tuning, variants as variants_mod
from rnncompiler.compiler.variants import variants as variants_of
from rnncompiler.compiler.codegen import helpers
from rnncompiler.compiler.codegen.microkernel import default_names_c, prototypes, symbol
from rnncompiler.compiler.pipeline import cache_key, lower
from rnncompiler.compiler.dsl import bind_sizes


def test_variants_follow_the_isa():
    """AVX-512 (with VL): 512-bit and 256-bit, both 8 rows; AVX: 256-bit, 4 rows; else
    128-bit. The first is the default shape (the kernel's own file's microkernel)."""
    names = lambda flags: [v.name for v in variants_of(frozenset(flags))]  # noqa: E731
    assert names({"avx", "avx2", "avx512f", "avx512vl"}) == ["w64r8", "w32r8"]
    assert names({"avx", "avx2", "avx512f"}) == ["w32r4"]       # no VL: no 256-bit AVX-512 ops
    assert names({"avx", "avx2", "fma"}) == ["w32r4"]
    assert names({"sse2"}) == ["w16r4"]
    assert names(()) == ["w16r4"]


def test_symbols_and_prototypes_name_the_variant():
    assert symbol("mk_gemm", "float") == "rnnc_s_mk_gemm"
    assert symbol("mk_gemm", "double", "w32r8") == "rnnc_d_mk_gemm_w32r8"
    text = prototypes("w32r8", "float")
    assert "rnnc_s_mk_pack_nt_w32r8(" in text and "rnnc_s_mk_gemm_w32r8(" in text
    default = tuning.variants()[0].name
    assert "rnnc_s_mk_gemm_%s(M, N, K" % default in default_names_c("float")


def test_hoisted_choice_reads_the_nearest_grid_point():
    grid = ((128, 32, True), (128, 512, False), (2048, 32, False), (2048, 512, True))
    t = tuning.Tuning("w32r8", grid, "measured")
    assert t.hoisted_microkernel(128, 32) and t.hoisted_microkernel(100, 40)
    assert not t.hoisted_microkernel(128, 400) and not t.hoisted_microkernel(4096, 16)
    assert t.hoisted_microkernel(1500, 700)
    assert not tuning.DEFAULT.hoisted_microkernel(128, 32)     # no measurement: OpenBLAS


def _measured(step, hoisted_mk, hoisted_blas, variants=("w64r8", "w32r8")):
    n = len(tuning.STEP_SHAPES)
    return {"float32": {"step": {v: [s] * n for v, s in zip(variants, step)},
                        "hoisted": dict({v: list(hoisted_mk) for v in variants},
                                        blas=list(hoisted_blas))}}


@pytest.fixture
def avx512(monkeypatch):
    """variants() as on a core with AVX-512 (decide's default is the first)."""
    monkeypatch.setattr(tuning, "variants", lambda flags=None: (variants_mod.Variant(64, 8),
                                                                variants_mod.Variant(32, 8)))


def test_decide_takes_the_faster_variant_by_a_margin(avx512):
    G = len(tuning.HOISTED_GRID)
    # 256-bit clearly faster: chosen
    assert tuning.decide(_measured([2.0, 1.0], [1.0] * G, [2.0] * G))["float32"].variant == "w32r8"
    # within the margin: the default shape stays
    assert tuning.decide(_measured([1.01, 1.0], [1.0] * G, [2.0] * G))["float32"].variant == "w64r8"
    # the default faster: kept
    assert tuning.decide(_measured([1.0, 1.5], [1.0] * G, [2.0] * G))["float32"].variant == "w64r8"


def test_decide_chooses_each_hoisted_shape(avx512):
    G = len(tuning.HOISTED_GRID)
    mk = [1.0] * G
    # faster by more than the hoisted margin, slower, faster within it, ties
    blas = [1.2, 0.5, 1.1] + [1.0] * (G - 3)
    t = tuning.decide(_measured([1.0, 1.0], mk, blas))["float32"]
    assert tuning.HOISTED_MARGIN > 0.1
    assert [use for _, _, use in t.hoisted] == [True, False, False] + [False] * (G - 3)
    assert [(n, k) for n, k, _ in t.hoisted] == list(tuning.HOISTED_GRID)
    assert t.source == "measured"


def test_which_kernels_are_tuned(monkeypatch):
    """RNNC_TUNING at any level; else the measurement at -O2/-O3, the default below."""
    monkeypatch.setenv("RNNC_TUNING", "%s:microkernel" % tuning.variants()[-1].name)
    assert tuning.for_kernel("float32", 1).source == "RNNC_TUNING"
    monkeypatch.delenv("RNNC_TUNING")
    assert tuning.for_kernel("float32", 1) is tuning.DEFAULT
    monkeypatch.setattr(tuning, "for_dtype", lambda dtype: "measured")
    assert tuning.for_kernel("float32", 2) == "measured"


def test_rnnc_tuning_parses_and_refuses():
    assert tuning.parse("default") is tuning.DEFAULT
    v = tuning.variants()[-1].name
    t = tuning.parse(v + ":microkernel")
    assert t.variant == v and all(use for _, _, use in t.hoisted) and t.source == "RNNC_TUNING"
    assert not any(use for _, _, use in tuning.parse(v).hoisted)
    with pytest.raises(ValueError, match="RNNC_TUNING: .*w99r3"):
        tuning.parse("w99r3")
    with pytest.raises(ValueError, match="RNNC_TUNING: expected 'blas' or 'microkernel'"):
        tuning.parse(v + ":gpu")


@pytest.mark.slow          # the measurement itself: a few seconds, once per cache
def test_the_machine_table_is_measured_once_and_shown(monkeypatch):
    """The session's first compile measured it into the cache; later calls read it (a
    second measurement would fail here), and `rnnc cache info` shows the choice."""
    monkeypatch.delenv("RNNC_TUNING", raising=False)
    first = tuning.machine_table()
    monkeypatch.setattr(tuning, "measure", lambda: pytest.fail("measured twice"))
    assert tuning.machine_table() == first
    path = tuning.table_path()
    assert os.path.dirname(path) == os.environ["RNNC_CACHE_DIR"]
    with open(path) as f:
        assert json.load(f)["identity"]["version"] == tuning.VERSION
    for dtype in ("float32", "float64"):
        m = first["measured"][dtype]
        assert set(m["step"]) == {v.name for v in tuning.variants()}
        assert all(len(ts) == len(tuning.STEP_SHAPES) and min(ts) > 0 for ts in m["step"].values())
        # OpenBLAS and the variant chosen for the steps, each followed by a chunk's steps
        assert set(m["hoisted"]) == {"blas", tuning.for_dtype(dtype).variant}
        assert all(len(ts) == len(tuning.HOISTED_GRID) and min(ts) > 0 for ts in m["hoisted"].values())
        # the weight gradients on OpenBLAS and on the variant, the choice per grid point
        assert set(m["tn"]) == {"blas", tuning.for_dtype(dtype).variant}
        assert all(len(ts) == len(tuning.HOISTED_GRID) and min(ts) > 0 for ts in m["tn"].values())
        assert [(n, k) for n, k, _ in tuning.for_dtype(dtype).tn] == list(tuning.HOISTED_GRID)
        assert tuning.for_dtype(dtype).variant in m["step"]
    out = subprocess.run([sys.executable, "-m", "rnncompiler.cli", "cache", "info"],
                         capture_output=True, text=True, check=True).stdout
    assert "tuning: %s (measured on this machine" % path in out
    assert "float32: microkernel %s;" % tuning.for_dtype("float32").variant in out


def test_a_table_for_another_machine_is_not_read(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"identity": {"machine": "elsewhere"}, "measured": {}}))
    assert tuning.load_table(str(path)) is None
    path.write_text("{not json")
    assert tuning.load_table(str(path)) is None


def test_the_tuning_is_in_the_cache_key_and_the_c():
    """Two tunings, two keys and two texts: the products call the variant chosen, a
    hoisted product the microkernel or OpenBLAS."""
    cell = rc.cells.lstm
    sizes = bind_sizes(cell, 3, 4, None)
    v = tuning.variants()[-1].name
    blas_t, mk_t = tuning.parse(v + ":blas"), tuning.parse(v + ":microkernel")
    keys = {cache_key(cell, sizes, "float32", 1, True, t) for t in (tuning.DEFAULT, blas_t, mk_t)}
    assert len(keys) == 3
    blas_c = lower(cell, sizes, "float32", True, tuning=blas_t)[2].text
    mk_c = lower(cell, sizes, "float32", True, tuning=mk_t)[2].text
    assert "rnnc_s_mk_gemm_%s(B," % v in blas_c and "rnnc_s_mk_gemm(" not in blas_c
    assert "rnnc_s_gemm_big(RNNC_NT" in blas_c and "rnnc_s_gemm_big(RNNC_NT" not in mk_c
    assert "rnnc_s_mk_gemm_rows_%s((ptrdiff_t)tc * B" % v in mk_c
    assert "rnnc_s_mk_gemm_tn_big_%s(threads" % v in mk_c and "rnnc_s_gemm_big(RNNC_TN" not in mk_c
    assert "rnnc_s_gemm_big(RNNC_TN" in blas_c
    default_c = lower(cell, sizes, "float32", True)[2].text
    assert "rnnc_s_mk_gemm(B," in default_c


@pytest.mark.slow
@pytest.mark.parametrize("path", ["blas", "microkernel"])
@pytest.mark.parametrize("variant", [v.name for v in tuning.variants()])
def test_every_variant_and_hoisted_path_is_correct(monkeypatch, variant, path):
    """Odd sizes (partial panels, every row remainder of a block), float64: gradients
    against central differences and the forward against the reference evaluator; float32
    against the float64 kernel of the default tuning."""
    monkeypatch.setenv("RNNC_TUNING", "%s:%s" % (variant, path))
    kern = rc.compile(rc.cells.lstm, 5, 7, "float64")       # -O1: RNNC_TUNING still applies
    text, _ = build.read_entry(kern._key)
    assert "rnnc_d_mk_gemm_%s(B," % variant in text                # the variant is what runs
    assert ("rnnc_d_mk_gemm_rows_%s((ptrdiff_t)tc * B" % variant in text) == (path == "microkernel")
    # and the weight gradients after each chunk: the variant's own TN product, or OpenBLAS's
    assert ("rnnc_d_mk_gemm_tn_big_%s(threads" % variant in text) == (path == "microkernel")
    assert ("rnnc_d_gemm_big(RNNC_TN" in text) == (path == "blas")
    assert rc.gradcheck(kern, T=4, B=11).ok
    k32 = rc.compile(rc.cells.lstm, 5, 7, "float32")
    monkeypatch.setenv("RNNC_TUNING", "default")
    k64 = rc.compile(rc.cells.lstm, 5, 7, "float64")
    p = k64.init_params(seed=3)
    x = np.random.default_rng(1).standard_normal((6, 9, 5))
    ref = k64.forward(p, x).outputs
    got = k32.forward({n: v.astype(np.float32) for n, v in p.items()}, x.astype(np.float32)).outputs
    assert np.max(np.abs(got - ref)) < 1e-5
    # bitwise deterministic for a given tuning
    again = k32.forward({n: v.astype(np.float32) for n, v in p.items()}, x.astype(np.float32)).outputs
    assert np.array_equal(got, again)


@pytest.mark.slow
def test_the_timing_program_builds_and_times():
    """The driver the tuning run builds: every path of every real type times a product."""
    first = tuning.variants()[0].name
    lines = [(d, p, 6, 40, 9, s, first) for d, _ in tuning.DTYPES
             for p in ["blas"] + [v.name for v in tuning.variants()] for s in (0, 3)]
    runs, times = tuning._run_driver(lines)
    assert len(times) == len(lines) and all(0 < t < 1 for t in times)
    assert runs and runs == tuning._run_driver(lines[:1])[0]     # OpenBLAS's own pick
    assert "rnnc_s_mk_gemm" in helpers.runtime_c()


def test_openblas_kernel_sets_follow_the_flags():
    """Candidates are only the sets the core can run (a set beyond the ISA would stop the
    process on an illegal instruction)."""
    avx512 = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    assert variants_mod.openblas_cores(frozenset(avx512)) == ("SkylakeX", "Haswell")
    assert variants_mod.openblas_cores(frozenset(avx512 | {"avx512_bf16"})) == (
        "SkylakeX", "Cooperlake", "Haswell")
    assert variants_mod.openblas_cores(frozenset({"avx", "avx2", "fma"})) == ("Haswell",)
    assert variants_mod.openblas_cores(frozenset({"avx", "avx2"})) == ()
    assert variants_mod.openblas_cores(frozenset()) == ()


def test_the_openblas_kernel_set_is_chosen_by_a_margin(avx512):
    G = len(tuning.HOISTED_GRID)
    own = {"float32": [1.0] * G, "float64": [1.0] * G, "runs": "Haswell"}
    faster = {"float32": [0.5] * G, "float64": [0.6] * G, "runs": "SkylakeX"}
    assert tuning._blas_core({"": own, "SkylakeX": faster}) == "SkylakeX"
    close = {"float32": [0.99] * G, "float64": [0.99] * G, "runs": "SkylakeX"}
    assert tuning._blas_core({"": own, "SkylakeX": close}) == ""       # within the noise
    assert tuning._blas_core({"": own}) == ""
    measured = _measured([1.0, 1.0], [1.0] * G, [2.0] * G)
    measured["openblas"] = {"chosen": "SkylakeX", "cores": {}}
    assert tuning.decide(measured)["float32"].blas_core == "SkylakeX"
    assert tuning.Tuning(blas_core="SkylakeX").key() != tuning.DEFAULT.key()


LOAD_OPENBLAS = r"""
import os, sys
from rnncompiler.compiler import build
first = build.load_openblas(sys.argv[1])
assert os.environ.get("OPENBLAS_CORETYPE") == "Sandybridge", os.environ.get("OPENBLAS_CORETYPE")
print(first, build.load_openblas(""), "scipy_openblas32" in sys.modules)
"""


@pytest.mark.skipif(not {"avx2", "fma"} <= variants_mod.cpu_flags(), reason="needs AVX2 and FMA")
def test_openblas_loads_with_the_kernel_set_asked_for():
    """In a fresh process: the set asked for, whatever $OPENBLAS_CORETYPE says (which is
    left as it was); once loaded the library keeps its set; the package itself, whose
    import loads the library, is not imported."""
    env = dict(os.environ, OPENBLAS_CORETYPE="Sandybridge")
    out = subprocess.run([sys.executable, "-c", LOAD_OPENBLAS, "Haswell"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Haswell", "Haswell", "False"]


def test_a_kernel_tuned_for_another_openblas_set_warns_once(monkeypatch):
    from rnncompiler.compiler import pipeline
    monkeypatch.setattr(pipeline, "_OPENBLAS_WARNED", set())
    monkeypatch.setattr(build, "load_openblas", lambda core: "Haswell")
    with pytest.warns(RuntimeWarning, match="with its Haswell kernels before a kernel tuned "
                                            "for its SkylakeX kernels"):
        assert pipeline.load_openblas(tuning.Tuning(blas_core="SkylakeX")) == "Haswell"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline.load_openblas(tuning.Tuning(blas_core="SkylakeX"))     # once
        pipeline.load_openblas(tuning.Tuning(blas_core=""))             # OpenBLAS's own: no warning
        pipeline.load_openblas(tuning.Tuning(blas_core="haswell"))      # the same set


def test_the_weight_gradients_are_chosen_per_shape(avx512):
    """The TN choice reads its own measurement, by the same margin as the hoisted one;
    a table measured before it (no "tn") keeps OpenBLAS."""
    G = len(tuning.HOISTED_GRID)
    measured = _measured([1.0, 1.0], [1.0] * G, [1.0] * G)
    measured["float32"]["tn"] = {"blas": [1.0] * G, "w64r8": [0.5] + [0.9] * (G - 1)}
    t = tuning.decide(measured)["float32"]
    assert [use for _, _, use in t.tn] == [True] + [False] * (G - 1)
    assert t.tn_microkernel(128, 32) and not t.tn_microkernel(2048, 512)
    del measured["float32"]["tn"]
    assert not tuning.decide(measured)["float32"].tn_microkernel(128, 32)
    assert tuning.parse("w64r8:microkernel").tn_microkernel(2048, 512)
    assert not tuning.parse("w64r8:blas").tn_microkernel(128, 32)
