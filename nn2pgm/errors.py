"""The one error hierarchy: everything a user can cause is an :class:`Nn2pgmError`.

The CLI catches this class only and prints its message as one line with exit code 2; any other
exception is a bug in nn2pgm and keeps its traceback. Subclasses keep ``ValueError`` (or
``RuntimeError``) as a second base so that callers that caught those still do.

This module imports nothing.
"""

from __future__ import annotations


class Nn2pgmError(Exception):
    """Bad input or bad usage: the message is one line naming the problem and the fix."""


class UsageError(Nn2pgmError, ValueError):
    """An option or argument of the call is wrong."""


class ResourceError(Nn2pgmError, ValueError):
    """The model asks for more memory, elements or time than the budget allows."""


class ModelExit(Nn2pgmError):
    """The model's own code called ``sys.exit`` or was interrupted while nn2pgm ran it."""
