"""Structured pruning that really shrinks the matrices, plus unstructured magnitude pruning.

Structured: every block keeps its most important attention heads (rows of
``q_proj/k_proj/v_proj``, columns of ``o_proj``; ``num_heads`` shrinks) and FFN
channels (rows of ``fc1``, columns of ``fc2``). Importance is measured on data:

- ``taylor`` (labels available): ``|sum(activation * gradient)|`` of the task loss per
  head / channel (first-order estimate of the loss change when it is removed);
- ``activation`` (no labels): mean norm of the head's contribution to the ``o_proj``
  output, and ``mean|activation| * ||fc2 column||`` per FFN channel.

The pruned model is then recovered by a short distillation from the unpruned
teacher (:func:`compression.distill.distill`). Zeros alone give onnxruntime no
speed-up, so :func:`magnitude_prune` is only a size option (compressed file size).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rantune.errors import InputError
from rantune.lora import count_parameters
from rantune.model.encoder import Attention, ChannelEncoder, FeedForward
from rantune.tasks import Task

IMPORTANCE_METHODS = ("auto", "taylor", "activation")


@dataclass(frozen=True)
class PruneSettings:
    """How much to prune.

    Attributes
    ----------
    head_ratio : share of heads removed in every block (at least one head stays).
    ffn_ratio : share of FFN channels removed in every block (at least one stays).
    importance : ``taylor`` (needs labels), ``activation``, or ``auto`` (taylor when
        labels are given).
    batch_size : rows per importance batch.
    max_rows : rows used to score importance.
    """

    head_ratio: float = 0.25
    ffn_ratio: float = 0.5
    importance: str = "auto"
    batch_size: int = 64
    max_rows: int = 512

    def __post_init__(self) -> None:
        for name in ("head_ratio", "ffn_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"prune {name}={value} is invalid: expected 0 <= ratio < 1")
        if self.importance not in IMPORTANCE_METHODS:
            raise InputError(
                f"importance {self.importance!r} is unknown: choose one of {IMPORTANCE_METHODS}"
            )


def shipped_encoder_only(model: nn.Module, what: str) -> None:
    """Refuse ``what`` (pruning, a distilled student) on a task model whose encoder is not
    the shipped :class:`ChannelEncoder`: it slices that architecture's heads, FFN
    channels and blocks, which a custom ``model.encoder`` need not have."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, ChannelEncoder):
        raise InputError(
            f"{what} relies on the shipped encoder's attention heads, FFN channels and "
            f"blocks, and this model's encoder is {type(encoder).__name__} (a custom "
            "model.encoder): leave pruned-int8 and distilled-int8 out (fp32, int8-dynamic, "
            "int8-static and sparse-int8 work with any encoder)"
        )


def _blocks(model: nn.Module) -> list[nn.Module]:
    shipped_encoder_only(model, "structured pruning")
    return list(model.encoder.blocks)


def importance_scores(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    task: Task | None = None,
    method: str = "auto",
    batch_size: int = 64,
) -> tuple[list[Tensor], list[Tensor], str]:
    """Per-block head scores ``[H_l]`` and FFN channel scores ``[F_l]`` (higher = keep).

    Returns the two lists and the method actually used.
    """
    if method == "auto":
        method = "taylor" if (y is not None and task is not None) else "activation"
    if method == "taylor" and (y is None or task is None):
        raise InputError("taylor importance needs labels and the task: pass y and task")
    work = copy.deepcopy(model).eval()
    for param in work.parameters():
        param.requires_grad_(method == "taylor")
    blocks = _blocks(work)
    heads = [torch.zeros(b.attn.num_heads) for b in blocks]
    channels = [torch.zeros(b.ffn.fc1.out_features) for b in blocks]
    captured: dict[tuple[int, str], Tensor] = {}

    def capture(index: int, kind: str):
        def hook(module: nn.Module, args: tuple) -> None:
            act = args[0]
            if method == "taylor":
                act.retain_grad()
            captured[(index, kind)] = act

        return hook

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.attn.o_proj.register_forward_pre_hook(capture(i, "attn")))
        handles.append(block.ffn.fc2.register_forward_pre_hook(capture(i, "ffn")))
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            captured.clear()
            with torch.set_grad_enabled(method == "taylor"):
                out = work(xb)
                if method == "taylor":
                    task.loss(out, y[start : start + batch_size]).backward()
            for i, block in enumerate(blocks):
                attn_act, ffn_act = captured[(i, "attn")], captured[(i, "ffn")]
                hd, nh = block.attn.head_dim, block.attn.num_heads
                if method == "taylor":
                    prod = (attn_act * attn_act.grad).detach()  # [B, L, H*hd]
                    heads[i] += prod.reshape(*prod.shape[:-1], nh, hd).sum(-1).sum((0, 1)).abs()
                    prod = (ffn_act * ffn_act.grad).detach()  # [B, L, F]
                    channels[i] += prod.sum((0, 1)).abs()
                else:
                    act = attn_act.detach().reshape(*attn_act.shape[:-1], nh, hd)  # [B, L, H, hd]
                    w_o = block.attn.o_proj.weight.detach().reshape(-1, nh, hd)  # [d, H, hd]
                    contrib = torch.einsum("blhe,dhe->blhd", act, w_o)  # [B, L, H, d]
                    heads[i] += contrib.norm(dim=-1).mean((0, 1)) * len(xb)
                    col_norm = block.ffn.fc2.weight.detach().norm(dim=0)  # [F]
                    channels[i] += ffn_act.detach().abs().mean((0, 1)) * col_norm * len(xb)
            work.zero_grad(set_to_none=True)
    finally:
        for handle in handles:
            handle.remove()
    return heads, channels, method


def _linear_like(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def slice_heads(attn: Attention, keep: Tensor) -> None:
    """Keep heads ``keep`` (indices) of ``attn`` in place: smaller q/k/v/o matrices."""
    keep = torch.sort(torch.as_tensor(keep, dtype=torch.long)).values
    if len(keep) < 1:
        raise InputError("cannot prune every head of a block: keep at least one")
    hd = attn.head_dim
    rows = (keep[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
    for name in ("q_proj", "k_proj", "v_proj"):
        old = getattr(attn, name)
        bias = old.bias.detach()[rows] if old.bias is not None else None
        setattr(attn, name, _linear_like(old.weight.detach()[rows], bias))
    o = attn.o_proj
    attn.o_proj = _linear_like(
        o.weight.detach()[:, rows], o.bias.detach() if o.bias is not None else None
    )
    attn.num_heads = len(keep)


def slice_ffn(ffn: FeedForward, keep: Tensor) -> None:
    """Keep FFN channels ``keep`` in place: ``fc1`` rows and ``fc2`` columns."""
    keep = torch.sort(torch.as_tensor(keep, dtype=torch.long)).values
    if len(keep) < 1:
        raise InputError("cannot prune every FFN channel of a block: keep at least one")
    fc1, fc2 = ffn.fc1, ffn.fc2
    ffn.fc1 = _linear_like(fc1.weight.detach()[keep], fc1.bias.detach()[keep])
    ffn.fc2 = _linear_like(fc2.weight.detach()[:, keep], fc2.bias.detach())


def _top(scores: Tensor, ratio: float) -> Tensor:
    count = max(1, len(scores) - int(round(ratio * len(scores))))
    return torch.topk(scores, count).indices


def structured_prune(
    model: nn.Module,
    x: Tensor | None,
    y: Tensor | None = None,
    task: Task | None = None,
    settings: PruneSettings = PruneSettings(),
    scores: tuple[list[Tensor], list[Tensor], str] | None = None,
) -> tuple[nn.Module, dict]:
    """A pruned copy of ``model`` (heads and FFN channels removed) and a summary.

    Parameters
    ----------
    model : merged fp32 task model (left untouched).
    x, y : rows to score importance on (``y`` optional; see ``settings.importance``).
    task : the task (its loss drives taylor importance).
    settings : ratios and importance method.
    scores : ``(heads, channels, method)`` measured elsewhere (e.g. summed over base
        stations, :func:`rantune.compression.federated_distill.source_importance`);
        then ``x`` and ``y`` are not used.

    Returns
    -------
    (nn.Module, dict)
        The pruned model (eval mode) and ``{"params_before", "params_after",
        "importance", "layers": [{"heads", "ffn"}, ...]}``.
    """
    if scores is None:
        x = x[: settings.max_rows]
        y = y[: settings.max_rows] if y is not None else None
        importance = settings.importance if y is not None else "activation"
        scores = importance_scores(model, x, y, task, importance, settings.batch_size)
    heads, channels, used = scores
    pruned = copy.deepcopy(model).eval()
    layers = []
    for block, head_score, ffn_score in zip(_blocks(pruned), heads, channels, strict=True):
        slice_heads(block.attn, _top(head_score, settings.head_ratio))
        slice_ffn(block.ffn, _top(ffn_score, settings.ffn_ratio))
        layers.append({"heads": block.attn.num_heads, "ffn": block.ffn.fc1.out_features})
    return pruned, {
        "params_before": count_parameters(model),
        "params_after": count_parameters(pruned),
        "importance": used,
        "head_ratio": settings.head_ratio,
        "ffn_ratio": settings.ffn_ratio,
        "layers": layers,
    }


def magnitude_prune(model: nn.Module, sparsity: float = 0.5) -> tuple[nn.Module, dict]:
    """A copy with the smallest-magnitude ``sparsity`` share of every encoder linear's
    weights set to zero (size-only: shapes and latency are unchanged); any encoder."""
    if not 0.0 < sparsity < 1.0:
        raise InputError(f"sparsity={sparsity} is invalid: expected 0 < sparsity < 1")
    pruned = copy.deepcopy(model).eval()
    zeros = total = 0
    with torch.no_grad():
        for module in pruned.encoder.modules():
            if isinstance(module, nn.Linear):
                weight = module.weight
                k = int(sparsity * weight.numel())
                if k:
                    threshold = weight.abs().flatten().kthvalue(k).values
                    weight.masked_fill_(weight.abs() <= threshold, 0.0)
                zeros += int((weight == 0).sum())
                total += weight.numel()
    return pruned, {"sparsity": zeros / max(total, 1), "target_sparsity": sparsity}
