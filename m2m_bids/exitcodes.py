"""Exit codes of the BIDS-Apps execution specification, and the exception that carries one.

Every stage raises :class:`AppError` with the code that describes the failure; only the CLI turns
it into a process exit status, so library code never calls ``sys.exit``.
"""

from __future__ import annotations

import errno
from enum import IntEnum

#: errno values meaning "the storage is full" (no space, quota exceeded): exit 74 wherever they occur.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ExitCode(IntEnum):
    """Reserved exit codes (bids-standard/execution-spec) plus the sysexits.h codes it adopts."""

    OK = 0
    FAILURE = 1
    INVALID_BIDS = 16
    UNKNOWN_LEVEL = 17
    NO_MATCH = 18
    USAGE = 64
    DATA_ERROR = 65
    NO_INPUT = 66
    CANT_CREATE = 73
    IO_ERROR = 74
    TEMP_FAIL = 75


class AppError(Exception):
    """An error a user can act on: what went wrong, which file, what to do, and the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE, *, path: str | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.code = ExitCode(code)
        self.path = path
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """One readable block: the problem, the file it concerns and the fix."""
        lines = [self.message]
        if self.path:
            lines.append(f"  file: {self.path}")
        if self.hint:
            lines.append(f"  fix:  {self.hint}")
        return "\n".join(lines)
