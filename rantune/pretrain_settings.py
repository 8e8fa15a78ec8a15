"""Pretraining settings: one typed, validated source of every ``rantune pretrain`` default.

>>> PretrainSettings(steps=100).weights["patches"]
0.3

:func:`reproduce_command` writes the command line of a run and
:func:`objective_description` the sentence a model card gives its objective.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from rantune.errors import InputError
from rantune.model.config import model_config
from rantune.pretrain_objective import KINDS, Objective
from rantune.tasks.settings import TaskSettings

NOISE_MODES = ("none", "awgn", "dataset")
RSRP_ERROR_DB = TaskSettings().rsrp_error_db  # the tasks' default measurement error


@dataclass(frozen=True)
class PretrainSettings:
    """Masked channel modeling settings.

    Attributes
    ----------
    preset : data preset (built-in name or .toml path); its last ``held_out_sites``
        sites are never trained on and give the reported masked NMSE.
    size : model size (``tiny`` or ``small``).
    steps : optimizer steps.
    batch_size : samples per step.
    lr : peak AdamW learning rate (after ``warmup_steps`` of linear warm-up, cosine
        decay to ``lr * min_lr_ratio``).
    weight_decay : AdamW weight decay.
    mask_ratio : share of patches hidden per sample of the ``patches`` kind (0 < r < 1).
    replacement : LWM 80/10/10 replacement of the chosen patches.
    noise : ``none``; ``awgn``: with ``noise_probability`` add white Gaussian noise at
        an SNR drawn uniformly from ``noise_snr_db``; ``dataset``: with
        ``noise_probability`` use the preset's ``csi_noisy``. Targets stay clean.
    weight_patches, weight_antennas, weight_pilots, weight_rsrp, weight_denoise : the
        share of samples hidden each way (normalised to sum 1; see
        :mod:`rantune.pretrain_objective`).
    mask_antennas : observed antenna counts of the ``antennas`` kind (the first n, as
        ``task-options.antennas``), one drawn per sample.
    pilot_spacings : observed every-k-th subcarrier of the ``pilots`` kind
        (``task-options.pilot-spacing``).
    set_b_spacings : Set B = every k-th beam, ``rsrp`` kind (``task-options.set-b-spacing``).
    rsrp_error_db : RSRP measurement error std (dB) of the ``rsrp`` kind.
    init : ``none`` (random init from ``seed``) or a checkpoint (shipped name or
        ``.safetensors`` path with its reconstruction head) to continue from.
    held_out_sites : number of sites (from the end of the preset) kept for evaluation.
    checkpoint_every : steps between resumable checkpoints.
    seed : seeds the model init and every random draw.
    """

    preset: str = "pretrain"
    size: str = "tiny"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 150
    weight_decay: float = 0.05
    mask_ratio: float = 0.4
    replacement: bool = False
    noise: str = "awgn"
    noise_probability: float = 0.5
    noise_snr_db: tuple[float, float] = (-5.0, 25.0)
    weight_patches: float = 0.3
    weight_antennas: float = 0.2
    weight_pilots: float = 0.2
    weight_rsrp: float = 0.2
    weight_denoise: float = 0.1
    mask_antennas: tuple[int, ...] = (2, 4, 8)
    pilot_spacings: tuple[int, ...] = (2, 4, 8)
    set_b_spacings: tuple[int, ...] = (2, 4)
    rsrp_error_db: float = RSRP_ERROR_DB
    init: str = "none"
    held_out_sites: int = 3
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_snr_db", tuple(float(v) for v in self.noise_snr_db))
        for name in ("mask_antennas", "pilot_spacings", "set_b_spacings"):
            values = tuple(getattr(self, name))
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise InputError(f"{name}={values!r} is invalid: expected integers >= 1")
            object.__setattr__(self, name, values)
        weights = self.weights
        if any(not (w >= 0 and math.isfinite(w)) for w in weights.values()) or not sum(
            weights.values()
        ):
            raise InputError(f"objective weights {weights} are invalid: expected >= 0, not all 0")
        if weights["denoise"] > 0 and self.noise == "none":
            raise InputError("weight_denoise > 0 needs noise (awgn or dataset), not noise=none")
        model_config(self.size)  # raises on an unknown size
        for name in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"pretrain {name}={value!r} is invalid: expected an integer >= 1")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise InputError(f"warmup_steps={self.warmup_steps!r} is invalid: expected >= 0")
        if not 0.0 < self.mask_ratio < 1.0:
            raise InputError(f"mask_ratio={self.mask_ratio} is invalid: expected 0 < ratio < 1")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 <= self.min_lr_ratio <= 1:
            raise InputError("lr must be finite and > 0, min_lr_ratio within 0..1")
        if self.noise not in NOISE_MODES:
            raise InputError(f"noise={self.noise!r} is invalid: choose one of {list(NOISE_MODES)}")
        if not 0.0 <= self.noise_probability <= 1.0:
            raise InputError(f"noise_probability={self.noise_probability} is not within 0..1")
        low, high = self.noise_snr_db
        if len(self.noise_snr_db) != 2 or low > high:
            raise InputError(f"noise_snr_db={self.noise_snr_db} is invalid: expected [min, max]")
        if not isinstance(self.held_out_sites, int) or self.held_out_sites < 1:
            raise InputError("held_out_sites must be an integer >= 1 (the masked NMSE needs them)")

    @property
    def weights(self) -> dict[str, float]:
        """``{kind: weight}`` of the objective's kinds."""
        return {kind: float(getattr(self, f"weight_{kind}")) for kind in KINDS}

    def objective(self, shape: tuple[int, int], num_beams: int) -> Objective:
        """The objective of these settings for data of ``shape`` (A, S) and ``num_beams``."""
        return Objective(
            self.weights,
            shape,
            num_beams,
            antennas=self.mask_antennas,
            pilot_spacings=self.pilot_spacings,
            set_b_spacings=self.set_b_spacings,
            rsrp_error_db=self.rsrp_error_db,
            mask_ratio=self.mask_ratio,
            replacement=self.replacement,
            noise_probability=self.noise_probability if self.noise != "none" else 0.0,
            noise_snr_db=self.noise_snr_db,
        )

    def to_dict(self) -> dict:
        payload = asdict(self)
        for name in ("noise_snr_db", "mask_antennas", "pilot_spacings", "set_b_spacings"):
            payload[name] = list(getattr(self, name))
        return payload


def learning_rate(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio``."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / span, 1.0)
    floor = settings.lr * settings.min_lr_ratio
    return floor + (settings.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def reproduce_command(settings: PretrainSettings, out_dir: Path | str, name: str) -> str:
    """The ``rantune pretrain`` command line that reproduces a run with ``settings``."""
    s = settings
    parts = [
        "rantune pretrain",
        f"--preset {s.preset}",
        f"--size {s.size}",
        f"--steps {s.steps}",
        f"--batch-size {s.batch_size}",
        f"--lr {s.lr:g}",
        f"--min-lr-ratio {s.min_lr_ratio:g}",
        f"--warmup-steps {s.warmup_steps}",
        f"--weight-decay {s.weight_decay:g}",
        f"--mask-ratio {s.mask_ratio:g}",
        "--replacement" if s.replacement else "--no-replacement",
        f"--noise {s.noise}",
        f"--noise-probability {s.noise_probability:g}",
        f"--noise-snr-db {s.noise_snr_db[0]:g},{s.noise_snr_db[1]:g}",
        *(f"--weight-{kind} {weight:g}" for kind, weight in s.weights.items()),
        f"--mask-antennas {','.join(map(str, s.mask_antennas))}",
        f"--pilot-spacings {','.join(map(str, s.pilot_spacings))}",
        f"--set-b-spacings {','.join(map(str, s.set_b_spacings))}",
        f"--rsrp-error-db {s.rsrp_error_db:g}",
        f"--init {s.init}",
        f"--held-out-sites {s.held_out_sites}",
        f"--seed {s.seed}",
        f"--out {out_dir}",
        f"--name {name}",
    ]
    return " ".join(parts)


def objective_description(settings: PretrainSettings) -> str:
    """One sentence naming the objective's kinds and weights (for the model card)."""
    s = settings
    parts = {
        "patches": f"random patches behind the mask token (ratio {s.mask_ratio:g})",
        "antennas": f"first {'/'.join(map(str, s.mask_antennas))} antennas observed",
        "pilots": f"every {'/'.join(map(str, s.pilot_spacings))}th subcarrier observed",
        "rsrp": f"Set B RSRPs (every {'/'.join(map(str, s.set_b_spacings))}th beam, "
        f"{s.rsrp_error_db:g} dB error)",
        "denoise": "denoising the full noisy LS estimate",
    }
    total = sum(s.weights.values())
    mix = "; ".join(f"{w / total:.0%} {parts[k]}" for k, w in s.weights.items() if w > 0)
    return (
        f"masked channel modeling, NMSE on the hidden entries of the clean channel: {mix}. "
        "Observations as the tasks' ObservationGate feeds them (zeros where unobserved, "
        "rescaled by the observed entries); noisy LS inputs at SNR "
        f"{s.noise_snr_db[0]:g}..{s.noise_snr_db[1]:g} dB"
    )
