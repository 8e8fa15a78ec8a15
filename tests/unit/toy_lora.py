"""A tiny task model for the LoRA aggregation tests: ``q_proj`` [3, 4] then ``head`` [2, 3]."""

from __future__ import annotations

from torch import nn


class Toy(nn.Module):
    """``x [N, 4] -> head(q_proj(x)) [N, 2]``; LoRA targets ``q_proj``, the head trains."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.q_proj(x))
