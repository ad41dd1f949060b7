"""User-facing errors: one line naming the field, the problem and the valid values."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value. ``str(err)`` is the one line shown to the user.

    >>> str(ConfigError("defense.trim", "must be < n/2 = 5", "0..4"))
    'defense.trim: must be < n/2 = 5 (valid: 0..4)'
    """

    def __init__(self, field: str, problem: str, valid: str | None = None):
        self.field, self.problem, self.valid = field, problem, valid
        msg = f"{field}: {problem}"
        if valid:
            msg += f" (valid: {valid})"
        super().__init__(msg.translate(ONE_LINE))


#: line breaks in user input (a key, a value) shown escaped, so an error stays one line
ONE_LINE = {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\v"): "\\v",
    ord("\f"): "\\f",
    ord("\x1c"): "\\x1c",
    ord("\x1d"): "\\x1d",
    ord("\x1e"): "\\x1e",
    ord("\x85"): "\\x85",
    ord("\u2028"): "\\u2028",
    ord("\u2029"): "\\u2029",
}


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing and downloading is off or impossible."""


class DataError(DataNotFoundError):
    """A dataset file is there but unusable: damaged, of an unknown hash, or holding
    something other than plain data. One line, like every user error (a subclass of
    :class:`DataNotFoundError`, so every place that reports missing data reports it)."""


class Diverged(ArithmeticError):
    """The run's arithmetic left the finite range in a place that is not the aggregate
    or the parameters (e.g. the server's own root-dataset update). The engine ends the
    run with ``status: diverged`` and ``str(err)`` as the reason; never a traceback."""


class DamagedFileError(ConfigError):
    """A file fedarena wrote (records, summary, checkpoint, sweep index) or reads (a
    config) is damaged: truncated, binary, or of the wrong shape. One line naming the file
    and the problem; the CLI reports it like any user error (exit 2).

    >>> str(DamagedFileError("run/summary.json", "not JSON (Expecting value)"))
    'run/summary.json: not JSON (Expecting value)'
    """

    def __init__(self, path: object, problem: str, valid: str | None = None):
        super().__init__(str(path), problem, valid)
        self.path = path
