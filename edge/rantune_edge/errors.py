"""The edge runtime's own error type for bad input (artifact, key, CSI file, argument).

``rantune_edge`` imports neither torch nor ``rantune``, so it cannot raise
``rantune.errors.InputError``; it raises :class:`EdgeError` instead, with a message
that says what is wrong and how to fix it. ``rantune-edge`` prints it as one line and
exits with status 2 (as the ``rantune`` CLI does for both error types); any other
exception keeps its traceback. It subclasses ``ValueError`` so callers that catch
``ValueError`` keep working.
"""

from __future__ import annotations


class EdgeError(ValueError):
    """Bad input to the edge runtime: a damaged or unsigned artifact, a wrong CSI array."""
