"""LoRA adapters (peft) on the task model: only adapters and the head train and travel.

peft (and the transformers stack it pulls in) is imported inside the functions that
use it, so the settings and names here stay cheap to import (the CLI reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rantune.errors import InputError
from rantune.schema import setting

if TYPE_CHECKING:
    from peft import PeftModel

PROJECTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


@dataclass(frozen=True)
class LoraSettings:
    """``lora.*``: LoRA hyper-parameters (the run defaults; see :mod:`rantune.schema`).

    Attributes
    ----------
    r : adapter rank.
    alpha : scaling numerator (``scale = alpha / r``).
    dropout : dropout on the adapter input.
    targets : names of the modules to adapt (peft matches a module name or its dotted
        suffix); the shipped encoder's are ``PROJECTION_NAMES``, a custom encoder's are
        its own, checked against the model by :func:`check_targets`.
    client_ranks : per-partition ranks cycled over partition ids (``()`` = ``r`` for
        all; a node config's ``lora-r`` wins), see :mod:`rantune.federated.ranks`.
    """

    r: int = setting(4, "adapter rank", low=1)
    alpha: float = setting(8.0, "adapter scale numerator (scale = alpha / r)", low=0.0, low_open=True)
    dropout: float = setting(0.0, "dropout on the adapter input", low=0.0, high=0.999)
    targets: tuple[str, ...] = setting(
        ("q_proj", "v_proj"),
        "adapted module names, comma-separated (the shipped encoder: "
        + ",".join(PROJECTION_NAMES)
        + "; a model.encoder: its own linear names)",
    )
    client_ranks: tuple[int, ...] = setting(
        (), 'per-partition ranks cycled over partition ids, e.g. "4,8,16" ("" = r for all)'
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "client_ranks", tuple(self.client_ranks))
        if not isinstance(self.r, int) or self.r < 1:
            raise InputError(f"lora rank r={self.r!r} is invalid: expected an integer >= 1")
        if self.alpha <= 0:
            raise InputError(f"lora alpha={self.alpha} is invalid: expected > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"lora dropout={self.dropout} is invalid: expected 0 <= dropout < 1")
        if not self.targets or not all(
            t and all(p.isidentifier() for p in t.split(".")) for t in self.targets
        ):
            raise InputError(
                f"lora targets {list(self.targets)} are invalid: give module names, e.g. "
                f"{','.join(PROJECTION_NAMES[:3])}"
            )
        if any(not isinstance(r, int) or r < 1 for r in self.client_ranks):
            raise InputError(
                f"lora.client-ranks={self.client_ranks} is invalid: ranks are integers >= 1 "
                '(write comma-separated ranks, e.g. "4,8,16")'
            )

    def with_rank(self, r: int) -> LoraSettings:
        """The same settings at rank ``r`` (one client's rank)."""
        return replace(self, r=int(r))


# Module types peft's LoRA wraps (the ones a target may name).
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


def shipped_targets(targets: tuple[str, ...]) -> None:
    """Check ``targets`` against the shipped encoder's projections before any work (its
    modules are known without building it)."""
    unknown = sorted(set(targets) - set(PROJECTION_NAMES))
    if unknown:
        raise InputError(
            f"lora targets {list(targets)} are invalid: the shipped encoder adapts "
            f"{list(PROJECTION_NAMES)} (a custom model.encoder may name its own modules)"
        )


def check_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target must name (as peft matches: the name or a dotted suffix) an
    adaptable module of ``model.encoder`` (of ``model`` when it has no encoder).

    Raises
    ------
    InputError
        Naming the targets that match nothing and listing the module names it has.
    """
    scope = getattr(model, "encoder", model)
    names = [n for n, m in scope.named_modules() if n and isinstance(m, ADAPTABLE)]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise InputError(
            f"lora targets {missing} name no module of {type(scope).__name__}; its "
            f"Linear/Conv/Embedding modules are named {leaves or 'nothing (none to adapt)'}: "
            "set lora.targets to some of them"
        )


def apply_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap a task model with LoRA adapters; the base is frozen, the ``head`` trains.

    Adapter weights are initialised from torch's global RNG (seed it first). Every
    target must name a module of the encoder (:func:`check_targets`).
    """
    from peft import LoraConfig, get_peft_model

    check_targets(model, settings.targets)

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        modules_to_save=["head"],
        bias="none",
    )
    return get_peft_model(model, config)


def trainable_state(model: PeftModel) -> dict[str, Tensor]:
    """Adapter and head tensors (what travels): ``{peft key: tensor}``, detached copies."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_trainable_state(model: PeftModel, state: dict[str, Tensor]) -> None:
    """Load adapter + head tensors produced by :func:`trainable_state` (strict on keys)."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise InputError(
            f"adapter state does not fit the model: missing {missing[:4]}, extra {extra[:4]}"
        )
    result = set_peft_model_state_dict(model, {k: torch.as_tensor(v) for k, v in state.items()})
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise InputError(f"adapter state has keys the model does not use: {unexpected[:4]}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
