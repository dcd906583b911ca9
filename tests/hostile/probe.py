"""The harness of the hostile-input suites (tests/hostile/): run a command's work as its script would,
and check what a user would: the exit status, a one-line message that names the culprit, and that no file the
command did not create has changed.

`run_command(work)` calls `work()` inside the scripts' own error wrapper (`captioning.cli.reports_errors`), so a
refusal gives the exit status and message the script gives, without a new interpreter per case.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from captioning.cli import reports_errors


@dataclass
class Outcome:
    code: int            # the exit status the script would end with (0: it ran to the end)
    message: str         # what it printed on failure ("error: ..."), or "" on success
    value: Any = None    # what the work returned when it succeeded


def run_command(work: Callable[[], Any]) -> Outcome:
    try:
        value = reports_errors(work)()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        return Outcome(code, "" if isinstance(exit_.code, int) else str(exit_.code))
    return Outcome(0, "", value)


def snapshot(root: str | Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    root = Path(root)
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files that existed before and were modified or removed (new files are the command's own)."""
    return sorted(path for path, digest in before.items() if after.get(path) != digest)


def assert_refused(outcome: Outcome, culprit: str, before: dict[str, str], after: dict[str, str]) -> None:
    """Exit status 1, a one-line `error: ...` naming `culprit`, and no pre-existing file touched."""
    assert outcome.code == 1, f"expected a refusal, the command ended with {outcome.code}"
    assert outcome.message.startswith("error: ") and "\n" not in outcome.message, outcome.message
    assert culprit in outcome.message, f"{culprit!r} not named in: {outcome.message}"
    assert changed_files(before, after) == [], changed_files(before, after)
