"""The artifact variants :func:`rantune.compression.pipeline.compress` builds, and which
of them a run supports (its distillation mode, its encoder).

``fp32``            merged teacher exported to ONNX (parity with PyTorch <= 1e-4).
``int8-dynamic``    per-channel int8 weights, dynamic activations (onnxruntime).
``int8-static``     per-channel int8 weights and activations (QDQ), calibrated without
                    pooled rows (:mod:`rantune.compression.calibrate`).
``pruned-int8``     heads and FFN channels removed by importance, recovered by a short
                    distillation, then dynamic int8.
``distilled-fp32``  (optional) the distilled student in fp32: the distillation's share
                    of ``distilled-int8``'s change, without quantization.
``distilled-int8``  smaller student distilled from the teacher, then dynamic int8.
``sparse-int8``     (optional) magnitude-pruned weights + dynamic int8: size-only, the
                    gain shows in the compressed (zip) size, not in latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from rantune.compression.prune import shipped_encoder_only
from rantune.errors import InputError
from rantune.model import ChannelEncoder

VARIANTS = (
    "fp32",
    "int8-dynamic",
    "int8-static",
    "pruned-int8",
    "distilled-fp32",
    "distilled-int8",
    "sparse-int8",
)
DEFAULT_VARIANTS = ("fp32", "int8-dynamic", "int8-static", "pruned-int8", "distilled-int8")
STUDENT_VARIANTS = ("pruned-int8", "distilled-fp32", "distilled-int8")
"""Variants that train a student (not built with ``distill_mode="off"``)."""


def parse_variants(variants: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"fp32,int8-dynamic"``, a list, ``"all"`` or ``None`` (defaults) -> variant names."""
    if variants is None:
        return DEFAULT_VARIANTS
    if isinstance(variants, str):
        variants = [variants]
    names: list[str] = []
    for item in variants:
        names += [v.strip() for v in str(item).split(",") if v.strip()]
    if names == ["all"]:
        return VARIANTS
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise InputError(
            f"unknown variant(s) {unknown or names}: choose from {', '.join(VARIANTS)} (or all)"
        )
    return tuple(dict.fromkeys(names))


def resolve_variants(variants: str | Iterable[str] | None, distill_mode: str) -> tuple[str, ...]:
    """:func:`parse_variants`; with distillation ``off`` the default leaves the student
    variants out, and asking for one is an error."""
    names = parse_variants(variants)
    if distill_mode != "off":
        return names
    if variants is None or names == VARIANTS:
        return tuple(n for n in names if n not in STUDENT_VARIANTS)
    asked = [n for n in names if n in STUDENT_VARIANTS]
    if asked:
        raise InputError(
            f"{', '.join(asked)} train(s) a student, but distillation is off: pass "
            "--distill federated or --distill server, or leave them out of --variants"
        )
    return names


def encoder_variants(
    names: tuple[str, ...], model: nn.Module, explicit: bool, log: Callable[[str], None]
) -> tuple[str, ...]:
    """The variants ``model``'s encoder supports: a custom ``model.encoder`` has no
    student variants (they slice the shipped architecture); asking for one is an error,
    the default leaves them out."""
    asked = [n for n in names if n in STUDENT_VARIANTS]
    if not asked or isinstance(model.encoder, ChannelEncoder):
        return names
    if explicit:
        shipped_encoder_only(model, ", ".join(asked))
    log(f"custom encoder: {', '.join(asked)} left out (they need the shipped encoder)")
    return tuple(n for n in names if n not in STUDENT_VARIANTS)
