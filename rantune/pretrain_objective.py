"""The pretraining objective: masked channel modeling with the tasks' partial observations.

Each sample of a batch gets one *variant* of the objective, drawn with configurable
weights per kind (then uniformly among that kind's options):

========== ========================================================================
kind       the encoder sees                                  scored entries
========== ========================================================================
patches    random patches (``mask_ratio``) replaced by the   the hidden patches
           mask token (LWM-style MCM; optional 80/10/10)
antennas   the first ``n`` antennas, zeros elsewhere          the other antennas
pilots     every ``k``-th subcarrier, zeros elsewhere         the other subcarriers
rsrp       Set B RSRPs (every ``k``-th beam) lifted to a      every entry
           CSI-shaped grid
denoise    the whole noisy LS estimate                        every entry
========== ========================================================================

The observation kinds (antennas, pilots, rsrp, denoise) are built by the tasks' own
:class:`rantune.tasks.observation.BeamObservation` for the same options, and fed through
its :class:`~rantune.tasks.observation.ObservationGate`: unobserved entries are ZEROS
(not the mask token) and the grid is rescaled by its observed entries, exactly what a
task model feeds the encoder. Only the ``patches`` kind uses the mask token (the tasks
never do; it keeps the encoder's masked-patch inpainting, the old MCM metric).
Observation inputs are noisy LS estimates (white noise at an SNR uniform in
``noise_snr_db``) with ``noise_probability`` (``denoise``: always); targets are the
clean channel in the input's frame (scaled by the same factor the gate applied).

Every draw comes from the one generator passed in, so a batch is a function of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rantune.model.masking import add_awgn, lwm_replacement, random_mask
from rantune.tasks.observation import BeamObservation, ObservationGate
from rantune.tasks.settings import TaskSettings

KINDS = ("patches", "antennas", "pilots", "rsrp", "denoise")
OBSERVATION_KINDS = KINDS[1:]


@dataclass(frozen=True)
class Variant:
    """One objective variant: a kind and its option (``n`` antennas, spacing ``k``)."""

    kind: str
    option: int = 0

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("patches", "denoise") else f"{self.kind}-{self.option}"

    def task_settings(self, rsrp_error_db: float) -> TaskSettings | None:
        """The task options whose observation this variant is (``None`` for patches)."""
        if self.kind == "antennas":
            return TaskSettings(observation="csi", antennas=self.option, pilot_spacing=1)
        if self.kind == "pilots":
            return TaskSettings(observation="csi", antennas=0, pilot_spacing=self.option)
        if self.kind == "denoise":
            return TaskSettings(observation="csi", antennas=0, pilot_spacing=1)
        if self.kind == "rsrp":
            return TaskSettings(
                observation="rsrp", set_b_spacing=self.option, rsrp_error_db=rsrp_error_db
            )
        return None


@dataclass
class ObjectiveBatch:
    """One batch of the objective.

    Attributes
    ----------
    inputs : float32 ``[B, 2, A, S]`` what the encoder sees (before its input scaling).
    token_mask : bool ``[B, P]`` patches replaced by the mask token.
    scored : bool ``[B, 2, A, S]`` entries the loss scores (the hidden ones).
    target : float32 ``[B, 2, A, S]`` clean channel in the input's frame.
    variant : int64 ``[B]`` index into :attr:`Objective.variants`.
    """

    inputs: Tensor
    token_mask: Tensor
    scored: Tensor
    target: Tensor
    variant: Tensor


class Objective:
    """The variants of one pretraining run and the batches they make.

    Parameters
    ----------
    weights : ``{kind: weight}`` (missing kinds weigh 0; at least one > 0).
    shape : ``(num_bs_antennas, num_subcarriers)``.
    num_beams : the data's codebook size (Set A) for the rsrp kind.
    antennas, pilot_spacings, set_b_spacings : options of those kinds.
    rsrp_error_db : RSRP measurement error std (dB).
    mask_ratio, replacement : the patches kind.
    noise_probability, noise_snr_db : white-noise LS estimates (see the module docstring).
    """

    def __init__(
        self,
        weights: dict[str, float],
        shape: tuple[int, int],
        num_beams: int,
        antennas: tuple[int, ...],
        pilot_spacings: tuple[int, ...],
        set_b_spacings: tuple[int, ...],
        rsrp_error_db: float,
        mask_ratio: float,
        replacement: bool,
        noise_probability: float,
        noise_snr_db: tuple[float, float],
    ) -> None:
        options = {
            "patches": (0,),
            "antennas": tuple(antennas),
            "pilots": tuple(pilot_spacings),
            "rsrp": tuple(set_b_spacings),
            "denoise": (0,),
        }
        self.variants: list[Variant] = []
        probabilities: list[float] = []
        total = sum(weights.get(kind, 0.0) for kind in KINDS)
        for kind in KINDS:
            share = weights.get(kind, 0.0) / total
            for option in options[kind]:
                self.variants.append(Variant(kind, option))
                probabilities.append(share / len(options[kind]))
        self.probabilities = torch.tensor(probabilities, dtype=torch.float64)
        self.shape = (int(shape[0]), int(shape[1]))
        self.mask_ratio, self.replacement = mask_ratio, replacement
        self.noise_probability, self.noise_snr_db = noise_probability, noise_snr_db
        self.gates: list[ObservationGate | None] = []
        for variant in self.variants:
            task = variant.task_settings(rsrp_error_db)
            self.gates.append(None if task is None else self.observation(task, num_beams).gate())
        self.rsrp_error_db = rsrp_error_db

    def observation(self, task: TaskSettings, num_beams: int) -> BeamObservation:
        """The tasks' observation for ``task`` options on this geometry."""
        return BeamObservation(task, self.shape, num_beams)

    @property
    def labels(self) -> list[str]:
        return [v.label for v in self.variants]

    def draw_variants(self, batch: int, generator: torch.Generator) -> Tensor:
        """Variant index ``[batch]`` int64, drawn with the kinds' weights."""
        return torch.multinomial(self.probabilities, batch, replacement=True, generator=generator)

    def batch(
        self,
        clean: Tensor,
        generator: torch.Generator,
        encoder,
        noisy: Tensor | None = None,
        variant: Tensor | None = None,
        noise_probability: float | None = None,
    ) -> ObjectiveBatch:
        """Build one batch from clean unit-norm CSI ``[B, 2, A, S]``.

        ``noisy``: the data set's own noisy estimates ``[B, 2, A, S]`` instead of drawn
        white noise; ``variant``: force these variant indices ``[B]`` (evaluation);
        ``noise_probability``: override the share of noisy observation inputs.
        """
        count = len(clean)
        rows, cols = encoder.grid(clean.shape[2], clean.shape[3])
        # draws of fixed size and order: the batch is a function of the generator alone
        drawn = self.draw_variants(count, generator)
        variant = drawn if variant is None else variant
        awgn = add_awgn(clean, 1.0, self.noise_snr_db, generator)
        share = self.noise_probability if noise_probability is None else noise_probability
        use_noise = torch.rand(count, generator=generator) < share
        chosen = random_mask(count, rows * cols, self.mask_ratio, generator)
        errors = torch.randn(count, max(1, self.shape[0]), generator=generator)
        noisy = awgn if noisy is None else noisy

        kinds = [self.variants[int(i)].kind for i in variant]
        use_noise |= torch.tensor([k == "denoise" for k in kinds], dtype=torch.bool)
        source = torch.where(use_noise[:, None, None, None], noisy, clean)  # [B, 2, A, S]
        inputs, target = source.clone(), clean.clone()
        token_mask = torch.zeros(count, rows * cols, dtype=torch.bool)
        scored = torch.zeros_like(clean, dtype=torch.bool)
        for index, (item, gate) in enumerate(zip(self.variants, self.gates, strict=True)):
            sel = (variant == index).nonzero().flatten()
            if len(sel) == 0:
                continue
            x = source[sel]
            if item.kind == "patches":
                mask = chosen[sel]
                tokens = mask
                if self.replacement:
                    patches, tokens = lwm_replacement(encoder.patchify(x), mask, generator)
                    x = encoder.unpatchify(patches, *self.shape)
                inputs[sel], token_mask[sel] = x, tokens
                hidden = mask[..., None].expand(-1, -1, encoder.config.patch_dim)
                scored[sel] = encoder.unpatchify(hidden.float(), *self.shape).bool()
            elif item.kind == "rsrp":
                gains = gate.set_b_gains(x)  # [b, Bm]
                error = errors[sel, : gains.shape[1]] * self.rsrp_error_db
                inputs[sel] = gate.from_rsrp(gains * 10.0 ** (error / 10.0))
                scored[sel] = True
            else:
                observed = gate.mask.bool()  # [A, S]
                inputs[sel] = gate(x)
                power = (x * gate.mask).pow(2).sum(dim=(1, 2, 3))  # [b]
                factor = gate.norm / torch.sqrt(power + 1e-12)  # the gate's own scaling
                target[sel] = clean[sel] * factor[:, None, None, None]
                hidden = torch.ones_like(observed) if item.kind == "denoise" else ~observed
                scored[sel] = hidden.expand(len(sel), 2, *self.shape)
        return ObjectiveBatch(inputs, token_mask, scored, target, variant)



@torch.no_grad()
def evaluate_objective(
    model, objective: Objective, x: Tensor, seed: int = 0, batch_size: int = 256
) -> dict[str, float]:
    """Held-out NMSE in dB of each variant, every row forced to it.

    ``model``: a :class:`rantune.model.masking.MaskedChannelModel`; ``x``: clean
    unit-norm CSI ``[N, 2, A, S]``. Observation variants see noisy LS inputs (SNR uniform
    in the objective's range) as a task would; ``patches`` sees clean inputs. The draws
    come from ``seed`` alone, so two models are scored on the same inputs.
    """
    from rantune.model.masking import masked_nmse

    was_training = model.training
    model.eval()
    out = {}
    for index, item in enumerate(objective.variants):
        generator = torch.Generator().manual_seed(seed)
        values = []
        for start in range(0, len(x), batch_size):
            clean = x[start : start + batch_size]
            forced = torch.full((len(clean),), index, dtype=torch.int64)
            share = 0.0 if item.kind == "patches" else 1.0
            b = objective.batch(clean, generator, model.encoder, variant=forced, noise_probability=share)
            scored = model.encoder.patchify(b.scored.float())
            values.append(masked_nmse(model(b.inputs, b.token_mask), model.target(b.target), scored))
        out[item.label] = float(10.0 * torch.log10(torch.cat(values).mean()))
    model.train(was_training)
    return out
