"""Golden C: the generated code of canonical cells is byte-identical to the committed
snapshots, so codegen changes are seen in review. RNNC_UPDATE_GOLDEN=1 rewrites them."""
import os

import pytest

from rnncompiler.compiler.pipeline import bind_sizes, lower

import rnncompiler as rc
from cells import elman, lstm, gru, peephole_lstm
from corner_cells import CORNER_CELLS

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


HAND_SIGMOID = CORNER_CELLS["hand_sigmoid"]     # 1/(1 + exp(-s t)) written by hand


def check_snapshot(text, name):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("RNNC_UPDATE_GOLDEN") == "1":
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        expected = f.read()
    assert text == expected, ("generated C %s changed; if intended, rerun with "
                              "RNNC_UPDATE_GOLDEN=1 and review the diff" % name)


@pytest.mark.parametrize("cell", [elman, lstm, gru, peephole_lstm, HAND_SIGMOID],
                         ids=lambda c: c.name)
def test_generated_c_matches_snapshot(cell):
    _, _, csrc = lower(cell, bind_sizes(cell, 3, 4, None), "float32", blas=True)
    check_snapshot(csrc.text, "%s_I3_H4_float32.c" % cell.name)


def test_exported_c_matches_snapshot(tmp_path):
    """The exported kernel of the hand-written sigmoid: its reciprocal whole, in libm."""
    rc.export_c(HAND_SIGMOID, str(tmp_path), input_size=3, hidden_size=4, dtype="float64",
                libm=True)
    with open(tmp_path / "hand_sigmoid.c") as f:
        text = f.read()
    assert "(1.0/(1.0 + exp(-a0*a1)))" in text or "(1.0/(exp(-a0*a1) + 1.0))" in text
    check_snapshot(text, "hand_sigmoid_export_I3_H4_float64.c")
