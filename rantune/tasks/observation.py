"""Partial observations: what a station measures of a channel, shared by every consumer.

One :class:`BeamObservation` (built from the task options and the data's shape) defines
the observation of the beam tasks; training and evaluation (``Task.tensors``), the
classical baselines and the exported model all use it:

- ``observation = csi``: the noisy LS estimate on a subset of antennas (the first
  ``antennas``) and pilot subcarriers (every ``pilot_spacing``-th); :attr:`mask`
  ``[A, S]`` says which entries are seen.
- ``observation = rsrp``: measured RSRP of a Set B of beams
  (:meth:`BeamObservation.measure_rsrp`): the beamforming gain of each Set B beam on the
  noisy estimate, times a log-normal measurement error of ``rsrp_error_db``.

The model sees the observation as a CSI-shaped grid ``[2, A, S]`` so the channel
encoder (and its LoRA adapters) read it like any CSI: the masked estimate, or for RSRP
the minimum-norm channel ``h = pinv(conj(W_B)) sqrt(r / S)`` (the same on every
subcarrier) whose Set B gains equal the measured RSRPs ``r``. Either grid is scaled to
a fixed Frobenius norm by its own entries (no statistic of an unobserved entry is used).
:class:`ObservationGate` computes that grid from any CSI-shaped input and is idempotent,
so the task model applies it first thing in ``forward``: the ONNX artifact accepts the
observation or a full CSI estimate alike and never sees more than the observation.

Noise that a task draws (measurement errors, noisy slots of ``csi_sequence``) is a
function of the sample itself (a hash of its noiseless ``csi``, :func:`sample_keys`) and
a purpose only (:func:`row_normal`), so a sample gets the same noise in training,
evaluation and the baselines, wherever it sits in whichever subset.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import torch
from torch import Tensor, nn

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.errors import InputError
from rantune.tasks.settings import TaskSettings

ELEMENT_SPACING_WAVELENGTHS = 0.5  # the generators' ULA spacing (checked against the data)
NOISE_SEED = 13_843  # root of the tasks' own noise draws (TR 38.843)
_EPS = 1e-12


def own_norm(x: np.ndarray) -> np.ndarray:
    """``x`` scaled per row so that what a station observed has unit Frobenius norm.

    ``x`` is ``[N, A, S]`` (a snapshot estimate: scaled by its own norm) or
    ``[N, T, A, S]`` (a sequence: every slot scaled by the norm of slot 0). A station
    can compute this from its own estimate, so training, evaluation and the edge
    runtime (``rantune_edge.io.csi_scale``, manifest ``unit-frobenius`` with scope
    ``snapshot`` / ``first-slot``) feed the model the same numbers; the noiseless
    channel's norm, which no station knows, is never used. Returns complex64.
    """
    norm = row_norm(x if x.ndim == 3 else x[:, 0])
    return (x / norm.reshape((len(x),) + (1,) * (x.ndim - 1))).astype(np.complex64)


def row_norm(x: np.ndarray) -> np.ndarray:
    """Frobenius norm ``[N]`` float64 of each row of ``x`` ``[N, ...]`` (at least 1e-12)."""
    power = (np.abs(x.astype(np.complex128)) ** 2).reshape(len(x), -1).sum(axis=1)
    return np.maximum(np.sqrt(power), _EPS)


def sample_keys(csi: np.ndarray) -> np.ndarray:
    """64-bit key ``[N]`` uint64 of each sample: a hash of its noiseless snapshot ``[N, A, S]``."""
    rows = np.ascontiguousarray(csi).reshape(len(csi), -1)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little")
            for r in rows
        ],
        dtype=np.uint64,
    )


def row_normal(keys: np.ndarray, shape: tuple[int, ...], purpose: str) -> np.ndarray:
    """Standard normal draws ``[len(keys), *shape]`` float64, a function of (purpose, key).

    ``keys`` from :func:`sample_keys`: a sample always gets the same numbers, whichever
    other samples are asked for with it.
    """
    tag = zlib.crc32(purpose.encode())
    out = np.empty((len(keys), *shape))
    for i, key in enumerate(np.asarray(keys, dtype=np.uint64)):
        words = [NOISE_SEED, tag, int(key) & 0xFFFFFFFF, int(key) >> 32]
        out[i] = np.random.default_rng(words).standard_normal(shape)
    return out


def ls_estimate(
    clean: np.ndarray, snr_db: np.ndarray, keys: np.ndarray, purpose: str
) -> np.ndarray:
    """Noisy LS estimate of ``clean`` ``[N, ..., A, S]`` (unit-norm snapshots) at ``snr_db`` ``[N]``.

    Complex Gaussian noise of variance ``1 / (A S) / 10^(snr/10)`` per entry, as
    ``csi_noisy`` is generated; drawn per row (:func:`row_normal`). Returns complex64.
    """
    antennas, subcarriers = clean.shape[-2:]
    var = 1.0 / (antennas * subcarriers) / 10.0 ** (np.asarray(snr_db, np.float64) / 10.0)  # [N]
    scale = np.sqrt(var / 2.0).reshape(-1, *([1] * (clean.ndim - 1)))
    draws = row_normal(keys, (2, *clean.shape[1:]), purpose)  # [N, 2, ..., A, S]
    return (clean + scale * (draws[:, 0] + 1j * draws[:, 1])).astype(np.complex64)


def wide_codebook(num_antennas: int, num_beams: int) -> np.ndarray:
    """``[K, A]`` complex64: a K-beam DFT codebook on the first K antennas (wide beams)."""
    narrow = dft_codebook(num_beams, num_beams, ELEMENT_SPACING_WAVELENGTHS)  # [K, K]
    out = np.zeros((num_beams, num_antennas), np.complex64)
    out[:, :num_beams] = narrow
    return out


def _normalize(x: Tensor, norm: float) -> Tensor:
    """Scale every row of ``x`` ``[B, ...]`` to Frobenius norm ``norm``."""
    dims = tuple(range(1, x.dim()))
    power = x.pow(2).sum(dim=dims, keepdim=True)  # [B, 1, ...]
    return x * (norm / torch.sqrt(power + _EPS))


class ObservationGate(nn.Module):
    """The observation grid of a CSI-shaped input; idempotent.

    ``forward(x)``: ``x`` float32 ``[B, 2, A, S]`` or ``[B, T, 2, A, S]`` (a sequence is
    normalized jointly over its slots) -> the same shape. Mask mode: entries outside
    the mask are zeroed. RSRP mode: the Set B gains ``g = sum_s |conj(W_B) h_s|^2`` are
    lifted to ``pinv(conj(W_B)) sqrt(g / S)`` on every subcarrier. Then every row is
    scaled to Frobenius norm :attr:`norm`. Buffers are not saved in state dicts.
    """

    def __init__(
        self,
        mask: np.ndarray | None = None,
        set_b: np.ndarray | None = None,
        num_subcarriers: int = 1,
        norm: float = 1.0,
    ) -> None:
        super().__init__()
        if (mask is None) == (set_b is None):
            raise InputError("an observation gate needs exactly one of a mask or a Set B codebook")
        self.norm = float(norm)
        self.num_subcarriers = int(num_subcarriers)
        self.kind = "mask" if mask is not None else "rsrp"
        if mask is not None:
            self.register_buffer(
                "mask", torch.as_tensor(mask, dtype=torch.float32), persistent=False
            )
        else:
            project = np.conj(set_b).astype(np.complex128)  # [Bm, A]: p = conj(W_B) h
            lift = np.linalg.pinv(project)  # [A, Bm]: conj(W_B) lift = I
            for name, value in (
                ("w_re", project.real),
                ("w_im", project.imag),
                ("l_re", lift.real),
                ("l_im", lift.imag),
            ):
                self.register_buffer(
                    name, torch.as_tensor(value, dtype=torch.float32), persistent=False
                )

    def set_b_gains(self, x: Tensor) -> Tensor:
        """``[..., 2, A, S]`` -> Set B gains ``[..., Bm]`` (RSRP mode)."""
        re, im = x[..., 0, :, :], x[..., 1, :, :]  # [..., A, S]
        p_re = self.w_re @ re - self.w_im @ im  # [..., Bm, S]
        p_im = self.w_re @ im + self.w_im @ re
        return (p_re.pow(2) + p_im.pow(2)).sum(dim=-1)  # [..., Bm]

    def from_rsrp(self, rsrp: Tensor) -> Tensor:
        """Measured RSRPs ``[..., Bm]`` -> normalized grid ``[..., 2, A, S]`` (RSRP mode)."""
        subcarriers = self.num_subcarriers
        amp = torch.sqrt(rsrp.clamp_min(0.0) / subcarriers)[..., None]  # [..., Bm, 1]
        re = (self.l_re @ amp).expand(*amp.shape[:-2], self.l_re.shape[0], subcarriers)
        im = (self.l_im @ amp).expand(*amp.shape[:-2], self.l_im.shape[0], subcarriers)
        return _normalize(torch.stack([re, im], dim=-3), self.norm)  # [..., 2, A, S]

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "mask":
            return _normalize(x * self.mask, self.norm)  # [B, (T,) 2, A, S]
        return self.from_rsrp(self.set_b_gains(x))


class BeamObservation:
    """The beam tasks' partial observation for one data geometry (see the module docstring).

    Parameters
    ----------
    settings : the task options (``observation`` and its keys).
    shape : ``(num_bs_antennas, num_subcarriers)``.
    num_beams : size of the full codebook (Set A).

    Attributes
    ----------
    codebook : ``[K, A]`` complex64, Set A (the preset's DFT codebook).
    set_b : ``[Bm, A]`` complex64 Set B beams (RSRP mode), else ``None``.
    set_b_index : ``[Bm]`` Set A index of each Set B beam, or ``None`` (wide beams, CSI mode).
    mask : ``[A, S]`` bool observed entries (CSI mode), else ``None``.
    """

    def __init__(self, settings: TaskSettings, shape: tuple[int, int], num_beams: int) -> None:
        settings.check(shape, num_beams)
        self.settings = settings
        self.shape = (int(shape[0]), int(shape[1]))
        antennas, subcarriers = self.shape
        self.codebook = dft_codebook(antennas, num_beams, ELEMENT_SPACING_WAVELENGTHS)
        self.set_b = self.set_b_index = self.mask = None
        if settings.observation == "csi":
            observed = antennas if settings.antennas == 0 else settings.antennas
            mask = np.zeros(self.shape, dtype=bool)
            mask[:observed, :: settings.pilot_spacing] = True
            self.mask = mask
        elif settings.set_b_wide:
            self.set_b = wide_codebook(antennas, settings.set_b_wide)
        else:
            self.set_b_index = np.arange(0, num_beams, settings.set_b_spacing)
            self.set_b = self.codebook[self.set_b_index]

    @property
    def kind(self) -> str:
        return self.settings.observation

    @property
    def grid_norm(self) -> float:
        """Frobenius norm of the observation grid: observed entries keep unit mean power
        after the encoder's ``sqrt(A S)`` input scaling."""
        if self.mask is None:
            return 1.0
        return float(np.sqrt(self.mask.sum() / self.mask.size))

    def check_data(self, beam_gains_field: np.ndarray, csi: np.ndarray) -> None:
        """Fail if the data's beam labels were not made with :attr:`codebook`."""
        if beam_gains_field.shape[1] != len(self.codebook) or not np.allclose(
            beam_gains(csi[:1], self.codebook), beam_gains_field[:1], rtol=1e-3, atol=1e-6
        ):
            raise InputError(
                "cannot reproduce the data set's beam labels with a half-wavelength DFT codebook "
                f"of {len(self.codebook)} beams: the beam tasks need the generators' codebook"
            )

    def measure_rsrp(
        self, csi_noisy: np.ndarray, keys: np.ndarray, purpose: str = "rsrp"
    ) -> np.ndarray:
        """Measured Set B RSRPs ``[N, ..., Bm]`` float64 of noisy estimates ``[N, ..., A, S]``
        (``keys``: :func:`sample_keys` of the samples, seeding their measurement errors)."""
        gains = beam_gains(csi_noisy, self.set_b).astype(np.float64)  # [N, ..., Bm]
        if self.settings.rsrp_error_db > 0:
            error = row_normal(keys, gains.shape[1:], purpose) * self.settings.rsrp_error_db
            gains = gains * 10.0 ** (error / 10.0)
        return gains

    def masked(self, csi_noisy: np.ndarray) -> np.ndarray:
        """The observed entries of ``[N, ..., A, S]`` (zeros elsewhere), data-set scale."""
        return np.where(self.mask, csi_noisy, 0).astype(np.complex64)

    def gate(self) -> ObservationGate:
        """The torch module the task model applies first (see :class:`ObservationGate`)."""
        if self.mask is not None:
            return ObservationGate(mask=self.mask, norm=self.grid_norm)
        return ObservationGate(set_b=self.set_b, num_subcarriers=self.shape[1], norm=self.grid_norm)

    def model_input(self, csi_noisy: np.ndarray, keys: np.ndarray, purpose: str = "rsrp") -> Tensor:
        """Model input ``[N, (T,) 2, A, S]`` float32 of noisy estimates ``[N, (T,) A, S]``."""
        from rantune.model.encoder import csi_to_real

        gate = self.gate()
        with torch.no_grad():
            if self.mask is not None:
                return gate(csi_to_real(csi_noisy))
            return gate.from_rsrp(
                torch.as_tensor(self.measure_rsrp(csi_noisy, keys, purpose)).float()
            )

    def set_a_scores(self, rsrp: np.ndarray) -> np.ndarray:
        """Set A scores ``[N, ..., K]`` from Set B RSRPs: ``max_b r_b |w_a^H w_b|^2``.

        For a Set B that is a subset of Set A the top score is the best Set B beam; for
        wide beams it is the narrow beam best aligned with the best wide beam.
        """
        overlap = np.abs(self.codebook.conj() @ self.set_b.T) ** 2  # [K, Bm]
        return (rsrp[..., None, :] * overlap).max(axis=-1)
