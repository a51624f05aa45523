"""The evaluation's own error: what is missing and what to run."""

from __future__ import annotations





class EvaluateError(RuntimeError):
    """The evaluation cannot run; the message says what is missing and what to run."""
