"""A newly built kernel checks itself against the reference evaluator before it is used,
records that in its cache entry, and a wrong one is never cached; the cache checks the C
source it keeps before it reuses it."""
import os
import pickle

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler import build, mathfn, selfcheck
from rnncompiler.errors import CacheSecurityError, CompileError

from cells import lstm
from corner_cells import CORNER_CELLS

HAND_SIGMOID = CORNER_CELLS["hand_sigmoid"]
_PRINT_POW = mathfn.CPrinter._print_Pow


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of the test's own: what these tests plant must not reach other tests."""
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def planted(monkeypatch):
    """monkeypatch for a planted fault, with sympy's caches cleared after it (they would
    keep a planted derivative for the tests that follow)."""
    import sympy.core.cache
    sympy.core.cache.clear_cache()
    yield monkeypatch
    monkeypatch.undo()
    sympy.core.cache.clear_cache()


def unparenthesised_reciprocal(self, e):
    """The printer fault 1/(1 + exp(u)) -> 1.0/1 + exp(u), planted."""
    if e.exp.is_Integer and e.exp == -1:
        return "(1.0/%s)" % self._print(e.base)
    return _PRINT_POW(self, e)


def test_a_wrong_forward_is_refused_and_not_cached(cache, planted):
    monkeypatch = planted
    monkeypatch.setattr(mathfn.CPrinter, "_print_Pow", unparenthesised_reciprocal)
    with pytest.raises(CompileError, match=r"(?s)hand_sigmoid is wrong, so it was not cached: its "
                       r"forward pass differs .* at the outputs at step 0 .*computed by h\[t\] ="
                       ) as info:
        rc.compile(HAND_SIGMOID, 3, 4, "float64")
    assert os.path.exists(info.value.c_file)                 # kept for the report
    assert not [f for f in os.listdir(cache) if f.endswith((".json", ".so", ".c"))
                # the objects every kernel links, and the core's tuning
                and not f.startswith(("runtime-", "wrapper-", "tuning-"))]
    # without the check the same fault compiles; with the printer fixed the kernel is right
    wrong = rc.compile(HAND_SIGMOID, 3, 4, "float64", verify=False)
    monkeypatch.undo()
    monkeypatch.setenv("RNNC_CACHE_DIR", str(cache) + "-fixed")   # the key is the same
    right = rc.compile(HAND_SIGMOID, 3, 4, "float64", verify=False)
    params = right.init_params(seed=1)
    x = np.random.default_rng(1).standard_normal((4, 2, 3))
    assert not np.allclose(wrong.forward(params, x).outputs, right.forward(params, x).outputs)


def test_a_wrong_backward_names_the_gradient_and_its_equation(cache, planted):
    """The sigmoid's derivative planted wrong (σ instead of σ(1 - σ)): the forward agrees,
    the gradients of the gates' weights do not."""
    planted.setattr(mathfn.Sigmoid, "fdiff", lambda self, argindex=1: self)
    with pytest.raises(CompileError, match=r"its backward pass gives a wrong grad W_f: .*"
                       r"computed by δW_f \+= Σ_t δa_f\[t\] z\[t\]ᵀ"):
        rc.compile(lstm, 3, 4, "float32")


def test_the_check_is_recorded_so_a_hit_costs_nothing(cache, monkeypatch):
    calls = []
    original = selfcheck.first_problem
    monkeypatch.setattr(selfcheck, "first_problem", lambda *a: calls.append(1) or original(*a))
    kern = rc.compile(lstm, 3, 4, "float64")
    assert calls == [1] and build.is_verified(kern._key)
    rc.compile(lstm, 3, 4, "float64")
    assert calls == [1]


def test_an_unchecked_entry_is_checked_when_a_checking_compile_hits_it(cache, monkeypatch):
    kern = rc.compile(lstm, 3, 4, "float64", verify=False)
    assert not build.is_verified(kern._key)
    rc.compile(lstm, 3, 4, "float64")
    assert build.is_verified(kern._key)


def test_verify_must_be_a_bool(cache):
    with pytest.raises(TypeError, match="verify: expected True or False"):
        rc.compile(lstm, 3, 4, "float64", verify="yes")


# ---------------------------------------------------------------- the kept C source

def kept(cache, kern):
    return os.path.join(str(cache), kern._key + ".c")


def test_a_modified_kept_c_is_refused(cache):
    kern = rc.compile(lstm, 3, 4, "float64")
    with open(kept(cache, kern), "a") as f:
        f.write("\n/* planted */ int planted(void) { return 1; }\n")
    with pytest.raises(CacheSecurityError, match="does not match the SHA-256"):
        rc.compile(lstm, 3, 4, "float64")


def test_a_kept_c_others_can_write_is_refused(cache):
    kern = rc.compile(lstm, 3, 4, "float64")
    os.chmod(kept(cache, kern), 0o666)
    with pytest.raises(CacheSecurityError, match="writable by other users"):
        rc.compile(lstm, 3, 4, "float64")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_kept_c_rebuilds_the_entry(cache, damage):
    kern = rc.compile(lstm, 3, 4, "float64")
    path = kept(cache, kern)
    text = open(path).read()
    if damage == "missing":
        os.remove(path)
    else:
        with open(path, "w") as f:
            f.write(text[: len(text) // 2])
    again = rc.compile(lstm, 3, 4, "float64")
    assert open(path).read() == text and not again.loaded_from_cache
    # and the kernel pickles with the whole, checked C
    clone = pickle.loads(pickle.dumps(again))
    params = again.init_params(seed=0)
    x = np.ones((2, 1, 3))
    np.testing.assert_array_equal(clone.forward(params, x).outputs, again.forward(params, x).outputs)
