"""Every exception rnncompiler raises; this module imports nothing."""


class CellError(ValueError):
    """A mistake in a cell definition: sizes, names, unsupported math, missing states."""


class CompileError(RuntimeError):
    """The C compiler failed; carries the compiler's stderr tail and the kept C file."""

    def __init__(self, message, *, c_file=None, stderr=""):
        super().__init__(message)
        self.c_file = c_file
        self.stderr = stderr


class CacheSecurityError(PermissionError):
    """A cache directory or entry that other users can write is refused."""


class NonFiniteError(FloatingPointError):
    """check_finite=True found a NaN or infinity; names the variable, step and row."""
