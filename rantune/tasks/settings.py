"""``task-options.*``: what each task observes and predicts (one typed section, run-config keys).

Every task reads the keys it needs and ignores the others:

========================= ==================================================================
key                       read by
========================= ==================================================================
``horizon``               ``prediction``, ``beam-temporal``: slots from the last observed
                          slot to the target slot
``observation``           ``beam-spatial``, ``beam-temporal``: ``rsrp`` (measured RSRP of a
                          Set B of beams) or ``csi`` (noisy CSI on a subset of antennas and
                          pilot subcarriers)
``set-b-spacing``         ``observation = rsrp``: Set B = every k-th beam of the preset's
                          codebook (Set A, ``radio.num_beams`` beams)
``set-b-wide``            ``observation = rsrp``: Set B = this many wide beams instead (a
                          DFT codebook of the first K antennas); 0 = off
``rsrp-error-db``         ``observation = rsrp``: std of the RSRP measurement error (dB), on
                          top of the thermal noise of the estimate
``antennas``              ``observation = csi``: observed antennas, the first n (0 = all)
``pilot-spacing``         ``observation = csi``: observed subcarriers, every k-th (1 = all)
========================= ==================================================================

The defaults are 3GPP TR 38.843's BM-Case1 setting (Set B = every 4th beam of Set A,
measured RSRP) and the prediction horizon of the earlier ``prediction`` task. Values
that depend on the radio geometry (``antennas`` <= ``num_bs_antennas``, ...) are
checked when a task meets its data (:meth:`TaskSettings.check`).

>>> TaskSettings().set_b_spacing
4
"""

from __future__ import annotations

from dataclasses import dataclass

from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.schema import setting

OBSERVATIONS = ("rsrp", "csi")


@dataclass(frozen=True)
class TaskSettings:
    """Task options (see the module docstring for which task reads which key)."""

    horizon: int = setting(
        2,
        "prediction / beam-temporal: slots from the last observed slot to the target slot",
        low=1,
    )
    observation: str = setting(
        "rsrp",
        "beam-spatial / beam-temporal: rsrp (Set B beam RSRPs) or csi (noisy CSI on a subset "
        "of antennas / pilot subcarriers)",
        choices=OBSERVATIONS,
    )
    set_b_spacing: int = setting(
        4, "observation=rsrp: Set B = every k-th beam of the preset's codebook", low=1
    )
    set_b_wide: int = setting(
        0,
        "observation=rsrp: Set B = K wide beams (DFT beams of the first K antennas); 0 = off",
        low=0,
    )
    rsrp_error_db: float = setting(
        1.0, "observation=rsrp: std of the RSRP measurement error in dB", low=0.0, high=20.0
    )
    antennas: int = setting(4, "observation=csi: observed antennas, the first n (0 = all)", low=0)
    pilot_spacing: int = setting(
        1, "observation=csi: observed subcarriers, every k-th (1 = all)", low=1
    )

    def check(self, radio: RadioConfig | tuple[int, int], num_beams: int | None = None) -> None:
        """Fail with a hint if the options do not fit the radio geometry.

        Parameters
        ----------
        radio : the preset's radio block, or ``(num_bs_antennas, num_subcarriers)``.
        num_beams : codebook size (Set A) when ``radio`` is a shape.
        """
        if isinstance(radio, RadioConfig):
            antennas, subcarriers, beams = (
                radio.num_bs_antennas,
                radio.num_subcarriers,
                radio.num_beams,
            )
        else:
            (antennas, subcarriers), beams = radio, num_beams or 0
        if self.observation == "csi":
            if self.antennas > antennas:
                raise InputError(
                    f"task-options.antennas={self.antennas} exceeds the preset's "
                    f"{antennas} BS antennas: choose 1..{antennas} (0 = all)"
                )
            if self.pilot_spacing > subcarriers:
                raise InputError(
                    f"task-options.pilot-spacing={self.pilot_spacing} exceeds the preset's "
                    f"{subcarriers} subcarriers: choose 1..{subcarriers}"
                )
        else:
            if self.set_b_wide > antennas:
                raise InputError(
                    f"task-options.set-b-wide={self.set_b_wide} wide beams need as many "
                    f"antennas; the preset has {antennas}: choose 1..{antennas} (0 = off)"
                )
            if self.set_b_wide == 0 and beams and self.set_b_spacing > beams:
                raise InputError(
                    f"task-options.set-b-spacing={self.set_b_spacing} leaves no Set B beam "
                    f"in a {beams}-beam codebook: choose 1..{beams}"
                )
            if self.set_b_wide == 0 and beams and -(-beams // self.set_b_spacing) > antennas:
                raise InputError(
                    f"Set B of {-(-beams // self.set_b_spacing)} beams exceeds the "
                    f"{antennas} antennas (its RSRPs would not be independent): raise "
                    "task-options.set-b-spacing"
                )

    def describe(self) -> str:
        """One line naming the observation, e.g. ``Set B every 4th of 16 beams, RSRP error 1 dB``."""
        if self.observation == "csi":
            ant = "all antennas" if self.antennas == 0 else f"antennas 0..{self.antennas - 1}"
            pil = (
                "all subcarriers"
                if self.pilot_spacing == 1
                else f"every {self.pilot_spacing}th subcarrier"
            )
            return f"noisy CSI on {ant}, {pil}"
        setb = (
            f"{self.set_b_wide} wide beams"
            if self.set_b_wide
            else f"every {self.set_b_spacing}th beam"
        )
        return f"Set B RSRP ({setb}, error {self.rsrp_error_db:g} dB)"
