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
