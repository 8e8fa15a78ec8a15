"""Compression stage: the global model -> small, measured edge artifacts.

Modules (import what you need; this package imports nothing on its own, so that
it stays light; the device runtime itself is ``rantune_edge``, numpy + onnxruntime only):

- :mod:`compression.merge`: run directory -> merged fp32 task model (LoRA folded in).
- :mod:`compression.export`: ONNX export (dynamo, one file, dynamic batch) + parity.
- :mod:`compression.quantize_edge`: onnxruntime int8, dynamic and static (QDQ).
- :mod:`compression.quantize_server`: torchao int8/float8/int4 for the server core.
- :mod:`compression.prune`, :mod:`compression.distill`: smaller models, recovered by KD.
- :mod:`compression.manifest`, :mod:`compression.edge`: re-exports of ``rantune_edge``'s
  artifact manifest and runtime (one copy of the code, in ``edge/rantune_edge``).
- :mod:`compression.pipeline`, :mod:`compression.report`: ``compress`` and its report.
"""
