"""User-facing errors: the CLI prints the message (no traceback) and exits non-zero."""


class SbeError(RuntimeError):
    """A problem with the user's input or environment, explained in the message."""
