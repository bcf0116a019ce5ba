"""One kernel cache per test session (shared by the xdist workers, which inherit the
environment of the controller, and removed at its end), -O1 builds and kernels in the
default shape, not tuned to the core: only correctness is tested here (tests/test_tuning.py
runs the measurement and every variant itself)."""
import os
import shutil
import tempfile

_OWNED = "RNNC_TEST_CACHE" not in os.environ
if _OWNED:
    os.environ["RNNC_TEST_CACHE"] = tempfile.mkdtemp(prefix="rnnc-test-cache-")
os.environ["RNNC_CACHE_DIR"] = os.environ["RNNC_TEST_CACHE"]
os.environ.setdefault("RNNC_OPT_LEVEL", "1")
os.environ.setdefault("RNNC_TUNING", "default")
os.environ.setdefault("MPLBACKEND", "Agg")      # plots render off screen


def pytest_unconfigure(config):
    if _OWNED and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["RNNC_TEST_CACHE"], ignore_errors=True)
