"""Why a verification failed, as a machine-readable reason code.

The verifier never guesses: every check that fails raises
:class:`VerificationError` with a ``reason`` a program can branch on and a
``detail`` a person can read.
"""

from __future__ import annotations


class VerificationError(Exception):
    """A signed note, checkpoint, proof or export does not verify."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail or reason.replace("_", " ")
        super().__init__(f"{self.reason}: {self.detail}")

    def __reduce__(self) -> tuple[type[VerificationError], tuple[str, str]]:
        # Raised in a replay worker process, it crosses back to the verifier pickled.
        return (VerificationError, (self.reason, self.detail))


class InputError(Exception):
    """What the auditor gave cannot be checked at all: a missing folder, a malformed key.

    Not a verdict on the log (exit code 2, not 1): the log may be fine.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
