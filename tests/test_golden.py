"""Golden C: the generated code of canonical cells is byte-identical to the committed
snapshots, so codegen changes are seen in review. RNNC_UPDATE_GOLDEN=1 rewrites them."""
import os

import pytest

from rnncompiler.pipeline import bind_sizes, lower

from cells import elman, lstm, gru, peephole_lstm

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


@pytest.mark.parametrize("cell", [elman, lstm, gru, peephole_lstm], ids=lambda c: c.name)
def test_generated_c_matches_snapshot(cell):
    _, _, csrc = lower(cell, bind_sizes(cell, 3, 4, None), "float32", blas=True)
    path = os.path.join(GOLDEN, "%s_I3_H4_float32.c" % cell.name)
    if os.environ.get("RNNC_UPDATE_GOLDEN") == "1":
        with open(path, "w") as f:
            f.write(csrc.text)
    with open(path) as f:
        expected = f.read()
    assert csrc.text == expected, ("generated C for %s changed; if intended, rerun with "
                                   "RNNC_UPDATE_GOLDEN=1 and review the diff" % cell.name)
