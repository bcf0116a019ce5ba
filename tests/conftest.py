"""One kernel cache per test session (shared by the xdist workers, which inherit the
environment of the controller, and removed at its end), and -O1 builds: only correctness
is tested here."""
import os
import shutil
import tempfile

_OWNED = "RNNC_TEST_CACHE" not in os.environ
if _OWNED:
    os.environ["RNNC_TEST_CACHE"] = tempfile.mkdtemp(prefix="rnnc-test-cache-")
os.environ["RNNC_CACHE_DIR"] = os.environ["RNNC_TEST_CACHE"]
os.environ.setdefault("RNNC_OPT_LEVEL", "1")
os.environ.setdefault("MPLBACKEND", "Agg")      # plots render off screen


def pytest_unconfigure(config):
    if _OWNED and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["RNNC_TEST_CACHE"], ignore_errors=True)
