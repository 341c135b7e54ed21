"""User-facing errors: the CLI prints the message as one line (no traceback) and exits non-zero."""

from __future__ import annotations

import errno

#: errors that mean the output could not be written (the others are reported as "cannot open")
_WRITE_ERRNOS = {
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EFBIG,
}


class SbeError(RuntimeError):
    """A problem with the user's input or environment, explained in the message."""


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error, naming the path and what to do when it is clear.

    Example: ``cannot write /data/out/part-0.parquet: No space left on device (free some space,
    then run the same command again: finished parts are kept)``.
    """
    path = e.filename if e.filename is not None else ""
    reason = e.strerror or str(e)
    if not path:
        return reason
    verb = "cannot write" if e.errno in _WRITE_ERRNOS else "cannot open"
    text = f"{verb} {path}: {reason}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        text += " (free some space, then run the same command again: finished parts are kept)"
    elif e.errno in (errno.EEXIST, errno.ENOTDIR):
        text += " (an output must be a folder: choose another path)"
    return text
