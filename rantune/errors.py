"""The project's own error type for bad input (config, files, CLI arguments).

Validation anywhere in rantune raises :class:`InputError` with a message that says
what is wrong and how to fix it. The CLI prints it as one line and exits with
status 2; every other exception (a bug, a failure inside a dependency) keeps its
traceback. ``InputError`` subclasses ``ValueError`` so callers that catch
``ValueError`` keep working.

>>> raise InputError("lora.r=0 is invalid: expected an integer >= 1")
Traceback (most recent call last):
...
rantune.errors.InputError: lora.r=0 is invalid: expected an integer >= 1
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a config value, a file, a CLI argument."""
