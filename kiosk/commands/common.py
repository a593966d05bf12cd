"""What every `kiosk` subcommand shares: exit statuses, the error type, JSON output."""

from __future__ import annotations

import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_NOT_FOUND = 0, 1, 2, 3


class CommandError(Exception):
    """A command that cannot proceed: the sentence to print and the exit status."""

    def __init__(self, message: str, status: int = EXIT_REFUSED):
        super().__init__(message)
        self.status = status


def emit(document: Any) -> None:
    """Print one JSON document on stdout (the `--json` convention)."""
    import json  # here, not at the top: the touchscreen imports this module before its first frame

    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
