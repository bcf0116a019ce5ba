"""Options and environment variables: every RNNC_* variable and every compile option is
parsed in one place and refused, with its name and the values it accepts, when it is
not one of them."""
import pytest

import rnncompiler as rc
from rnncompiler.compiler import build
from rnncompiler import options
from rnncompiler.runtime import threads

from cells import elman


@pytest.mark.parametrize("value", ["fast", "-1", "4", "2.5", "O2"])
def test_bad_opt_level_variable_names_it_and_its_values(monkeypatch, value):
    """RNNC_OPT_LEVEL=fast is a ValueError naming the variable and 0..3, not int()'s."""
    monkeypatch.setenv("RNNC_OPT_LEVEL", value)
    with pytest.raises(ValueError, match=r"RNNC_OPT_LEVEL: expected an int in 0\.\.3, got %r"
                       % value):
        rc.compile(elman, 3, 4, "float64")


@pytest.mark.parametrize("value", ["s", 2.5, True, -1, 4, "2"])
def test_bad_opt_level_argument_names_it_and_its_values(value):
    """opt_level='s', 2.5 (which built -O2), True and out-of-range ints are refused."""
    with pytest.raises(ValueError, match=r"opt_level: expected None or an int in 0\.\.3"):
        rc.compile(elman, 3, 4, "float64", opt_level=value)


def test_opt_level_defaults_to_the_variable_then_3(monkeypatch):
    monkeypatch.setenv("RNNC_OPT_LEVEL", " 2 ")
    assert options.opt_level() == 2 and options.opt_level(0) == 0
    monkeypatch.delenv("RNNC_OPT_LEVEL")
    assert options.opt_level() == 3


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_blas_must_be_a_bool(value):
    with pytest.raises(TypeError, match=r"blas: expected True or False"):
        rc.compile(elman, 3, 4, "float64", blas=value)


def test_debug_level_is_compared_as_a_number(monkeypatch, capsys):
    """RNNC_DEBUG=10 shows the compiler commands (as a string, "10" < "3" hid them)."""
    monkeypatch.setenv("RNNC_DEBUG", "10")
    build._run_gcc([(["true", "--marker-of-this-test"], "unused.c")])
    assert "true --marker-of-this-test" in capsys.readouterr().err
    monkeypatch.setenv("RNNC_DEBUG", "2")
    build._run_gcc([(["true", "--marker-of-this-test"], "unused.c")])
    assert "--marker-of-this-test" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_bad_debug_level_names_it(monkeypatch, value):
    """RNNC_DEBUG=x was read as "show the gcc commands"; it is refused instead."""
    monkeypatch.setenv("RNNC_DEBUG", value)
    with pytest.raises(ValueError, match=r"RNNC_DEBUG: expected an int >= 0, got %r" % value):
        options.debug_level()


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_bad_thread_count_names_it(monkeypatch, value):
    monkeypatch.setattr(threads, "_num_threads", None)
    monkeypatch.setenv("RNNC_NUM_THREADS", value)
    with pytest.raises(ValueError, match=r"RNNC_NUM_THREADS: expected an int >= 1, got %r"
                       % value):
        rc.get_num_threads()


@pytest.mark.parametrize("value", ["soon", "0", "inf", "-5"])
def test_bad_compiler_timeout_names_it(monkeypatch, value):
    monkeypatch.setenv("RNNC_CC_TIMEOUT", value)
    with pytest.raises(ValueError, match=r"RNNC_CC_TIMEOUT: expected a positive number of "
                       r"seconds, got %r" % value):
        build.cc_timeout()


def test_bad_sanitizer_list_names_it_and_the_sanitizers(monkeypatch):
    monkeypatch.setenv("RNNC_SANITIZE", "address,,bogus")
    with pytest.raises(ValueError, match=r"RNNC_SANITIZE: expected a comma-separated list of "
                       r"address, undefined, leak, got 'address,,bogus'"):
        build.sanitize_flags()
    monkeypatch.setenv("RNNC_SANITIZE", " address , undefined ")
    assert build.sanitize_flags()[0] == "-fsanitize=address,undefined"
