"""Compression stage: the global model -> small, measured edge artifacts.

Modules (import what you need; this package imports nothing on its own, so that
:mod:`compression.edge` loads on devices with numpy and onnxruntime only):

- :mod:`compression.merge`: run directory -> merged fp32 task model (LoRA folded in).
- :mod:`compression.export`: ONNX export (dynamo, one file, dynamic batch) + parity.
- :mod:`compression.quantize_edge`: onnxruntime int8, dynamic and static (QDQ).
- :mod:`compression.quantize_server`: torchao int8/float8/int4 for the server core.
- :mod:`compression.prune`, :mod:`compression.distill`: smaller models, recovered by KD.
- :mod:`compression.manifest`, :mod:`compression.edge`: artifact manifest and runtime.
- :mod:`compression.pipeline`, :mod:`compression.report`: ``compress`` and its report.
"""
