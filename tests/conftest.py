"""One kernel cache per test session (shared by the xdist workers, which inherit the
environment of the controller), and -O1 builds: only correctness is tested here."""
import os
import tempfile

if "RNNC_TEST_CACHE" not in os.environ:
    os.environ["RNNC_TEST_CACHE"] = tempfile.mkdtemp(prefix="rnnc-test-cache-")
os.environ["RNNC_CACHE_DIR"] = os.environ["RNNC_TEST_CACHE"]
os.environ.setdefault("RNNC_OPT_LEVEL", "1")
