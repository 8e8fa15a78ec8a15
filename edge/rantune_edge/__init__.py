"""rantune-edge: run rantune's compressed, signed edge artifacts with numpy + onnxruntime.

>>> from rantune_edge import EdgeModel
>>> model = EdgeModel("ART/int8-dynamic", public_key="builder.pub.pem")
>>> result = model.predict_csi(csi)            # complex CSI [N, A, S]
>>> result["labels"], result["probabilities"]  # per row: class name, [N, K]

Modules: :mod:`~rantune_edge.manifest` (``manifest.json``), :mod:`~rantune_edge.runtime`
(:class:`EdgeModel`), :mod:`~rantune_edge.io` (CSI in, labels/CSI out),
:mod:`~rantune_edge.signing` (Ed25519, needs the ``[verify]`` extra),
:mod:`~rantune_edge.cli` (``rantune-edge``). Nothing here imports torch or ``rantune``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from rantune_edge.errors import EdgeError  # noqa: E402
from rantune_edge.manifest import Manifest, read_manifest, write_manifest  # noqa: E402


def __getattr__(name: str):
    # EdgeModel needs onnxruntime; importing the package for its manifest reader does not.
    if name == "EdgeModel":
        from rantune_edge.runtime import EdgeModel

        return EdgeModel
    raise AttributeError(f"module 'rantune_edge' has no attribute {name!r}")


__all__ = ["EdgeError", "EdgeModel", "Manifest", "__version__", "read_manifest", "write_manifest"]
