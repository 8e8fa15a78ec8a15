"""ONNX export of a task model: ``torch.onnx.export(dynamo=True)``, one file, dynamic batch.

The exported graph has one input ``csi`` (float32 ``[batch, 2, A, S]`` for snapshot
tasks, ``[batch, T, 2, A, S]`` for prediction) and one output ``output`` (logits
``[batch, K]`` or the predicted CSI ``[batch, 2, A, S]``). ``onnx.checker`` runs on
every export and :func:`check_parity` compares onnxruntime with PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import torch
from torch import Tensor, nn
from torch.export import Dim

from rantune.errors import InputError

INPUT_NAME = "csi"
OUTPUT_NAME = "output"
MAX_BATCH = 4096
FP32_TOLERANCE = 1e-4  # max abs difference allowed between onnxruntime and PyTorch fp32


def export_onnx(model: nn.Module, example: Tensor, path: Path | str) -> dict:
    """Export ``model`` (eval mode) to a single ONNX file with a dynamic batch axis.

    Parameters
    ----------
    model : the task model (fp32, CPU).
    example : float32 input with at least 2 rows (batch 1 would be specialized).
    path : output file; written through a temporary file and renamed into place.

    Returns
    -------
    dict
        ``opset``, ``input`` and ``output`` specs (``{"name", "shape", "dtype"}`` with
        ``"batch"`` for the dynamic axis), ``parameters`` (initializer elements),
        ``size_bytes`` and ``max_batch``.
    """
    path = Path(path)
    if example.dim() < 2 or example.shape[0] < 2:
        raise InputError("export needs an example batch of at least 2 rows")
    model = model.eval().float()
    example = example[:2].float().contiguous()

    def build(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                external_data=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},),
                verbose=False,
            )
            program.save(str(tmp), external_data=False)

    write_onnx(path, build, graph_level=True)
    return describe_onnx(path)


def write_onnx(path: Path | str, build, graph_level: bool) -> Path:
    """Run ``build(tmp_path)`` (it writes an ONNX file there), strip and compact the
    model, check it (the full check with inferred shapes when ``graph_level``; quantized
    graphs get the structural check), and rename it onto ``path``. Nothing is left at
    ``path`` or beside it when any step fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.onnx")
    os.close(fd)
    try:
        build(Path(tmp))
        proto = compact_onnx(strip_metadata(onnx.load(tmp), model_level=graph_level))
        onnx.checker.check_model(proto, full_check=graph_level)
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def strip_metadata(proto: onnx.ModelProto, model_level: bool = True) -> onnx.ModelProto:
    """Drop the exporter's per-node metadata (source stack traces, FX names, ~25% of a
    small model's file) and doc strings: an edge artifact carries weights and graph only."""
    for graph_node in proto.graph.node:
        del graph_node.metadata_props[:]
        graph_node.doc_string = ""
    for info in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        del info.metadata_props[:]
    for init in proto.graph.initializer:
        del init.metadata_props[:]
    if model_level:
        del proto.metadata_props[:]
    proto.graph.doc_string = ""
    return proto


def compact_onnx(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shrink graph bookkeeping without touching the computation.

    Every tensor name except the graph input and output becomes a short id (weights
    included), node names, doc strings and ``value_info`` go, and all-zero optional
    zero points of ``MatMulInteger`` (weights) and ``DequantizeLinear`` are dropped
    (zero is their default; ``QuantizeLinear`` keeps its zero point, which sets the
    output type). On a 0.3M-parameter model this bookkeeping is ~3% of the fp32 file
    and ~8% of an int8 one; every variant, fp32 included, is compacted the same way.
    """
    graph = proto.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping):x}"
        return mapping[name]

    initializers = {i.name: i for i in graph.initializer}

    def zero_initializer(name: str) -> bool:
        return name in initializers and not onnx.numpy_helper.to_array(initializers[name]).any()

    for graph_node in graph.node:
        optional_zero = {"MatMulInteger": 3, "DequantizeLinear": 2}.get(graph_node.op_type)
        if (
            optional_zero is not None
            and len(graph_node.input) == optional_zero + 1
            and zero_initializer(graph_node.input[optional_zero])
        ):
            del graph_node.input[optional_zero]
        graph_node.input[:] = [short(x) for x in graph_node.input]
        graph_node.output[:] = [short(x) for x in graph_node.output]
        graph_node.name = ""
        graph_node.doc_string = ""
    used = {x for graph_node in graph.node for x in graph_node.input}
    kept = [i for i in graph.initializer if short(i.name) in used]
    for init in kept:
        init.name = short(init.name)
        init.doc_string = ""
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    return proto


def _spec(value_info) -> dict:
    dims = [d.dim_param and "batch" or d.dim_value for d in value_info.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)
    return {"name": value_info.name, "shape": dims, "dtype": np.dtype(dtype).name}


def describe_onnx(path: Path | str) -> dict:
    """Opset, input/output specs, initializer element count and file size of a model."""
    path = Path(path)
    proto = onnx.load(str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "input": _spec(proto.graph.input[0]),
        "output": _spec(proto.graph.output[0]),
        "parameters": count_initializer_elements(proto),
        "size_bytes": path.stat().st_size,
        "max_batch": MAX_BATCH,
    }


def count_initializer_elements(proto: onnx.ModelProto) -> int:
    """Number of stored weight elements (any dtype) of an ONNX graph."""
    total = 0
    for init in proto.graph.initializer:
        total += int(np.prod(init.dims)) if len(init.dims) else 1
    return total


def onnx_session(path: Path | str, threads: int | None = None) -> ort.InferenceSession:
    from rantune_edge.runtime import session_options

    return ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )


def run_onnx(path_or_session, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """onnxruntime outputs for all rows of ``x`` (float32 numpy), batched."""
    session = (
        path_or_session
        if isinstance(path_or_session, ort.InferenceSession)
        else onnx_session(path_or_session)
    )
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [
        session.run(None, {INPUT_NAME: x[i : i + batch_size]})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def check_parity(
    model: nn.Module, path: Path | str, x: Tensor, atol: float = FP32_TOLERANCE
) -> float:
    """Max abs difference between PyTorch and onnxruntime on ``x``.

    Raises
    ------
    ValueError
        If it exceeds ``atol`` (the export changed the numbers).
    """
    with torch.no_grad():
        reference = model.eval()(x).numpy()
    got = run_onnx(path, x.numpy())
    error = float(np.abs(got - reference).max())
    if not error <= atol:
        raise InputError(
            f"ONNX export of {Path(path).name} differs from PyTorch by {error:.3g} "
            f"(tolerance {atol:g}): the export is not faithful"
        )
    return error
