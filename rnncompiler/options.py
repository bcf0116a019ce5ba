"""The settings read from the environment ($RNNC_DEBUG, $RNNC_OPT_LEVEL, ...) and the
compile options they stand in for, each parsed in one place: a bad value is a ValueError
naming the variable or argument and the values it accepts, never a bare int() error."""
from __future__ import annotations

import os

import numpy as np

OPT_LEVELS = (0, 1, 2, 3)


def _env_number(name, kind):
    """($name stripped, its value as `kind` or None when it is not one); ("", None) unset."""
    value = os.environ.get(name, "").strip()
    try:
        return value, kind(value) if value else None
    except ValueError:
        return value, None


def env_int(name, default, low, high=None):
    """$name as an int in [low, high] (high None: no bound), or default when unset or empty."""
    value, n = _env_number(name, int)
    if not value:
        return default
    if n is None or n < low or (high is not None and n > high):
        raise ValueError("%s: expected an int %s, got %r" % (name, _int_range(low, high), value))
    return n


def env_float(name, default, what="a positive number"):
    """$name as a positive finite number, or default when unset or empty."""
    value, x = _env_number(name, float)
    if not value:
        return default
    if x is None or not 0 < x < float("inf"):
        raise ValueError("%s: expected %s, got %r" % (name, what, value))
    return x


def env_names(name, allowed):
    """$name as a comma-separated list of names from `allowed` ([] when unset or empty)."""
    value = os.environ.get(name, "").strip()
    names = [n.strip() for n in value.split(",")] if value else []
    if any(n not in allowed for n in names):
        raise ValueError("%s: expected a comma-separated list of %s, got %r"
                         % (name, ", ".join(allowed), value))
    return names


def _int_range(low, high):
    return ">= %d" % low if high is None else "in %d..%d" % (low, high)


def debug_level():
    """$RNNC_DEBUG: 0 (quiet), 1 the stage outputs, 2 also the C, 3 also the compiler commands."""
    return env_int("RNNC_DEBUG", 0, 0)


def num_threads():
    """$RNNC_NUM_THREADS, or None when unset."""
    return env_int("RNNC_NUM_THREADS", None, 1)


def opt_level(value=None):
    """The gcc optimisation level: `value` (rc.compile's opt_level=) if given, else
    $RNNC_OPT_LEVEL, else 3; an int in 0..3."""
    if value is None:
        return env_int("RNNC_OPT_LEVEL", 3, OPT_LEVELS[0], OPT_LEVELS[-1])
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or int(value) not in OPT_LEVELS:
        raise ValueError("opt_level: expected None or an int in 0..3 (gcc's -O level), got %r"
                         % (value,))
    return int(value)


def flag(name, value):
    """A yes/no option (e.g. rc.compile's blas=) as a bool; anything but a bool is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError("%s: expected True or False, got %r" % (name, value))
    return bool(value)
