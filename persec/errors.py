"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class PersecError(Exception):
    """An error caused by user input (a path, a file format, a config value).

    The message must say what is wrong and, where possible, how to fix it.
    """


class ConfigError(PersecError):
    """A config file or override that does not match the typed config."""


class DataError(PersecError):
    """A dataset that cannot be opened or has the wrong layout."""


class RunStopped(Exception):
    """A training run stopped before its end on purpose (e.g. for a SLURM requeue); its
    checkpoint holds the state a resumed run continues from. Not a failure of the
    input: the CLI prints the message and exits with status 3."""


def first_line(e: BaseException) -> str:
    """The first line of an error's message, at most 300 characters (for one-line errors)."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 300 else line[:297] + "..."
