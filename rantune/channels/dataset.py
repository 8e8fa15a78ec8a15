"""In-memory channel data set: named numpy arrays with one row per sample.

Fields (``N`` samples, ``A`` BS antennas, ``S`` subcarriers, ``K`` beams, ``T`` slots):

========== ================ ========= ==================================================
name       shape            dtype     meaning
========== ================ ========= ==================================================
csi        [N, A, S]        complex64 noiseless frequency response, unit Frobenius norm
csi_noisy  [N, A, S]        complex64 LS estimate at ``snr_db`` (same normalization)
csi_norm   [N]              float32   Frobenius norm of the raw response before scaling
los        [N]              int8      1 = line of sight (TR 38.901 LoS state)
indoor     [N]              int8      1 = indoor user
beam_index [N]              int64     argmax of ``beam_gains`` (noiseless label)
beam_gains [N, K]           float32   DFT-codebook gain summed over subcarriers
ut_position [N, 3]          float32   UT position relative to the BS, metres
distance_2d [N]             float32   BS-UT 2-D distance, metres
speed      [N]              float32   UT speed, m/s
snr_db     [N]              float32   SNR of ``csi_noisy``, dB
site_index [N]              int64     index of the site (base station) in its preset
csi_sequence [N, T, A, S]   complex64 optional; T slots, slot 0 == ``csi``
========== ================ ========= ==================================================

Ray-traced sites (``rantune.channels.raytraced``) add, and TR 38.901 sites of the same
preset carry as NaN: ``aod_azimuth_rad`` / ``aod_elevation_rad`` ``[N]`` float32 (angle
of departure of the strongest path in the BS array's local frame), ``delay_s`` ``[N]``
float32 (its propagation delay) and ``ut_position_scene`` ``[N, 3]`` float32 (the UT in
scene coordinates, metres).

Unknown values: a station imported from a user's file (``rantune.channels.importer``)
may lack some values (no LoS flags, no positions...). They are stored as ``-1`` in
integer fields and NaN in float fields and listed in the station's manifest;
:meth:`ChannelDataset.require` fails clearly when a task needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rantune.errors import InputError

REQUIRED_FIELDS = (
    "csi",
    "csi_noisy",
    "csi_norm",
    "los",
    "indoor",
    "beam_index",
    "beam_gains",
    "ut_position",
    "distance_2d",
    "speed",
    "snr_db",
    "site_index",
)
OPTIONAL_FIELDS = ("csi_sequence",)


@dataclass
class ChannelDataset:
    """Column store of channel samples; see the module docstring for the fields."""

    arrays: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        missing = [k for k in REQUIRED_FIELDS if k not in self.arrays]
        if missing:
            raise InputError(f"channel data set is missing field(s) {missing}")
        sizes = {k: len(v) for k, v in self.arrays.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"channel data set fields disagree on the sample count: {sizes}")

    def __len__(self) -> int:
        return len(self.arrays["csi"])

    def require(self, name: str, purpose: str, index: np.ndarray | None = None) -> np.ndarray:
        """``self[name]`` (rows ``index``), failing if any value is unknown.

        Unknown = ``-1`` in an integer field, NaN in a float field (imported stations).

        Raises
        ------
        InputError
            If some of the rows have unknown ``name``; names their sites.
        """
        values = self.arrays[name] if index is None else self.arrays[name][index]
        unknown = np.isnan(values) if values.dtype.kind == "f" else values < 0
        if unknown.ndim > 1:
            unknown = unknown.reshape(len(unknown), -1).any(axis=1)
        if unknown.any():
            sites = self.arrays["site_index"]
            sites = sites if index is None else sites[index]
            raise InputError(
                f"{purpose} needs {name!r} but it is unknown for {int(unknown.sum())} of "
                f"{len(unknown)} row(s) (site index {sorted(set(sites[unknown].tolist()))}): "
                "those stations were imported without it; import them with it (e.g. "
                "--los-key, --positions-key) or leave them out"
            )
        return values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_bs_antennas, num_subcarriers)`` of one CSI sample."""
        return tuple(self.arrays["csi"].shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> ChannelDataset:
        """Rows ``index`` of every field (a copy)."""
        return ChannelDataset({k: v[index] for k, v in self.arrays.items()})

    @staticmethod
    def concat(parts: list[ChannelDataset]) -> ChannelDataset:
        """Stack data sets with the same fields along the sample axis."""
        keys = set(parts[0].arrays)
        for part in parts[1:]:
            if set(part.arrays) != keys:
                raise InputError("cannot concatenate data sets with different fields")
        return ChannelDataset({k: np.concatenate([p.arrays[k] for p in parts]) for k in keys})
