"""What the entry points share: a problem with the user's files or options ends the command with one line
naming the file or key (`error: ...`, exit status 1), not a traceback."""
from __future__ import annotations

import functools
from typing import Callable

from captioning.checkpoint import CheckpointError
from captioning.config import OptionError
from captioning.data.images import ImageReadError
from captioning.data.records import DataError
from captioning.errors import ExportError
from captioning.registry import SpecError

USER_ERRORS = (CheckpointError, DataError, SpecError, ImageReadError, OptionError, ExportError)


def reports_errors(main: Callable) -> Callable:
    """Wrap a script's work: the project's own errors exit with their one-line message, and so does an operating
    system error about a named file (an output folder under a file, no permission to write, a full disk)."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            raise SystemExit(f"error: {' '.join(str(error).split())}") from None
        except OSError as error:
            if error.filename is None:  # not about a file the user gave: a bug, keep its traceback
                raise
            raise SystemExit(f"error: {error.filename}: {error.strerror or error}") from None
    return run
