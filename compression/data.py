"""The data compression uses, and who holds it.

- **Measuring**: the server's global test set (``FederatedData.rows(None, "test")``);
  never trained on.
- **Students** (distillation, pruning importance and recovery) learn without pooled
  rows (:mod:`rantune.compression.federated_distill`): ``federated`` from each base
  station's own training rows, ``server`` from channels the server generates itself
  (:func:`server_channels`: a TR 38.901 drop with the run's radio block, or a named
  preset under a seed of its own), teacher outputs only; ``off``: no student is trained.
- **Static-int8 calibration** (:mod:`rantune.compression.calibrate`): in ``federated``
  and ``off`` mode each station computes MinMax activation ranges on its own training
  rows and only the ranges travel (no client row reaches the server); in ``server``
  mode the server calibrates on its generated rows.

Rows come from the run's own preset and partitioning
(:class:`rantune.federated.splits.FederatedData`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from rantune.channels import ChannelDataset, load_sites
from rantune.compression import federated_distill as fd
from rantune.compression.calibrate import FEDERATED_RANGES, SERVER_ROWS, calibration_stations
from rantune.config import DataConfig, RadioConfig, SiteConfig
from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import FederatedData, preset
from rantune.presets import load_preset
from rantune.seeding import derive_seed
from rantune.tasks import get_task

DISTILL_MODES = ("federated", "server", "off")
"""``rantune compress --distill`` choices (``server`` records ``server-generated``)."""

SERVER_DROP_SITES = (
    ("umi", (0.0, 15.0), 0.5, (10.0, 200.0)),
    ("uma", (0.0, 30.0), 0.2, (35.0, 500.0)),
    ("rma", (0.0, 40.0), 0.0, (35.0, 2000.0)),
)
"""The server's own drop: (scenario, speed range m/s, indoor probability, distance range m)."""


def _subsample(rows: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=max_rows, replace=False))


def pooled_split(
    cfg: RunConfig,
    split: str,
    max_rows: int | None = None,
    seed: int = 0,
    clients: Sequence[int] | None = None,
    data: FederatedData | None = None,
) -> tuple[Tensor, Tensor]:
    """Inputs and targets of every client's ``split`` rows pooled (``train``/``val``/``test``).

    For the centralized and local-only references and tests; students and calibration
    never use it. ``max_rows`` caps the count with a seeded random subset (every
    client contributes in proportion to its size). ``clients`` (partition ids) pools
    only those clients' rows; default all. ``data``: the run's stations when loaded.
    Each client's rows are the ones it uses in the run (:meth:`FederatedData.rows`: the
    run's ``data.max-*-rows`` caps applied).
    """
    data = data or FederatedData.load(cfg.data, cfg.partition)
    chosen = range(data.num_clients) if clients is None else clients
    rows = np.concatenate([data.rows(c, split) for c in chosen])
    rows = _subsample(np.sort(rows), max_rows, seed)
    return data.tensors_of(get_task(cfg.task, cfg.task_options), rows)


def server_drop(radio: RadioConfig, rows: int, seed: int) -> DataConfig:
    """The server's own TR 38.901 drop: UMi, UMa and RMa users over broad speed, distance
    and SNR ranges, ``rows`` samples in all, with the run's radio block."""
    if rows < 3:
        raise InputError(f"server distillation rows={rows} is too few: expected >= 3")
    per_site = -(-rows // 3)
    sites = [
        SiteConfig(
            name=f"server-{scenario}",
            scenario=scenario,
            num_samples=per_site,
            speed_range_mps=speeds,
            indoor_probability=indoor,
            distance_range_m=distances,
            snr_range_db=(-5.0, 25.0),
            seed=derive_seed(seed, "server-drop", scenario),
        )
        for scenario, speeds, indoor, distances in SERVER_DROP_SITES
    ]
    return DataConfig("server-distill", radio, tuple(sites))


def server_channels(
    cfg: RunConfig, rows: int, preset_name: str | None = None, seed: int = 0
) -> tuple[Tensor, dict]:
    """Task inputs ``[rows, ...]`` of channels the server generates itself (no labels).

    Parameters
    ----------
    cfg : the run (its radio block, task and data seed).
    rows : how many inputs (a seeded subset when the drop is larger).
    preset_name : a built-in preset name or .toml path to generate instead of
        :func:`server_drop`; it is generated under a seed offset other than the run's
        ``data.seed``, so its users are new even for the run's own preset.
    seed : distillation seed (picks the drop's seed and the subset).

    Returns
    -------
    (Tensor, dict)
        The inputs and what they are (``preset``, ``seed``, ``rows``, ``sites``).
    """
    radio = preset(cfg.data).radio
    offset = cfg.data.seed + 1 + derive_seed(seed, "server-distill") % 1000
    if preset_name:
        drop = load_preset(preset_name)
        if drop.radio != radio:
            raise InputError(
                f"--distill-preset {preset_name!r} has another radio block than the run's "
                f"{cfg.data.preset!r} preset: the model reads its input shape; choose a preset "
                "with the same [radio] table"
            )
        drop = drop.with_seed(offset)
    else:
        drop = server_drop(radio, rows, offset)
    stations = load_sites(drop, cache_root=cfg.data.cache or None, progress=False)
    pooled = ChannelDataset.concat(stations) if len(stations) > 1 else stations[0]
    index = _subsample(np.arange(len(pooled)), rows, derive_seed(seed, "server-rows"))
    x, _ = get_task(cfg.task, cfg.task_options).tensors(pooled, index)
    info = {
        "preset": preset_name or drop.name,
        "seed_offset": offset,
        "rows": int(len(x)),
        "sites": [site.name for site in drop.sites],
    }
    return x, info


@dataclass
class CompressionData:
    """Tensors (and the students' source) for one compression job.

    Attributes
    ----------
    eval_x, eval_y : global test rows: every variant is measured on them.
    calib_x : static-quantization calibration rows the server holds (float32 numpy,
        ``server`` mode); ``None`` otherwise.
    calib_stations : stations that calibrate on their own rows (federated ranges,
        :func:`rantune.compression.calibrate.calibration_stations`); used when
        ``calib_x`` is ``None``. With neither, ``int8-static`` refuses to run.
    calib_source : where calibration happens (the manifest's ``calib_source``).
    source : where students learn (:class:`~rantune.compression.federated_distill.
        DistillSource`); ``None``: distillation is off.
    """

    eval_x: Tensor
    eval_y: Tensor
    calib_x: np.ndarray | None = None
    calib_source: str = FEDERATED_RANGES
    source: object | None = None
    calib_stations: tuple = ()

    def __post_init__(self) -> None:
        if len(self.eval_x) == 0:
            raise InputError("no evaluation rows: the global test set is empty")
        if self.calib_x is not None and len(self.calib_x) == 0:
            self.calib_x = None


def run_data(
    cfg: RunConfig,
    max_train: int | None = 4096,
    max_calib: int = 256,
    max_eval: int | None = 2048,
    seed: int = 0,
    distill: str = "federated",
    server_rows: int = 2048,
    server_preset: str | None = None,
    calibrate: bool = True,
) -> CompressionData:
    """The global test set, calibration rows and the students' source of a run.

    ``max_train`` caps each station's rows (federated); ``distill`` is one of
    :data:`DISTILL_MODES`; ``server_rows`` / ``server_preset``: the server's drop
    (:func:`server_channels`); ``calibrate``: prepare static-int8 calibration
    (``max_calib`` rows: the server's own, or the stations' in all).
    """
    if distill not in DISTILL_MODES:
        raise InputError(
            f"--distill {distill!r} is unknown: choose one of {', '.join(DISTILL_MODES)}"
        )
    task = get_task(cfg.task, cfg.task_options)
    data = FederatedData.load(cfg.data, cfg.partition)
    test_rows = _subsample(data.rows(None, "test"), max_eval, seed + 2)
    eval_x, eval_y = data.tensors_of(task, test_rows)
    if distill == "server":
        x, info = server_channels(cfg, server_rows, server_preset, seed)
        calib = _subsample(np.arange(len(x)), max_calib, seed + 1) if calibrate else None
        return CompressionData(
            eval_x, eval_y, None if calib is None else x[calib].numpy(),
            SERVER_ROWS, fd.server_source(x, info),
        )  # fmt: skip
    source = fd.federated_source(cfg, data, task, max_train) if distill == "federated" else None
    stations = calibration_stations(data, task, max_calib, seed + 1) if calibrate else ()
    return CompressionData(eval_x, eval_y, None, FEDERATED_RANGES, source, stations)
