"""User-facing errors: the CLI prints these as one line, never a traceback."""


class CifarlabError(Exception):
    """A mistake in what the user asked for (bad input, missing file, unknown name)."""
