"""``manifest.json`` of an edge artifact, as the training side imports it.

The code lives once, in :mod:`rantune_edge.manifest` (standard library only, read on
devices); this module re-exports it for ``rantune.compression`` users.
"""

from __future__ import annotations

from rantune_edge.manifest import (
    BATCH_AXIS,
    CSI_NORMALIZATION,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_NAME,
    Manifest,
    normalization_for,
    read_manifest,
    write_manifest,
)

__all__ = [
    "BATCH_AXIS",
    "CSI_NORMALIZATION",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "Manifest",
    "normalization_for",
    "read_manifest",
    "write_manifest",
]
