"""``rantune data``: generate or load a preset's channel data and summarize it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from rantune.channels import load_site_info, load_sites, site_kind
from rantune.errors import InputError
from rantune.fileio import atomic_write_json
from rantune.partition import PartitionConfig
from rantune.presets import load_preset
from rantune.simulations.commands import data_import
from rantune.simulations.errors import cli_errors, ensure_output_dir
from rantune.simulations.partition_report import (
    partition_sites,
    plot_label_histograms,
    summarize_partition,
)

console = Console()


def _known(values: np.ndarray) -> np.ndarray:
    """``values`` without the unknown ones (-1 / NaN: imported stations lacking them)."""
    return values[~np.isnan(values)] if values.dtype.kind == "f" else values[values >= 0]


def _stat(values: np.ndarray, reduce) -> float | None:
    known = _known(values)
    return float(reduce(known)) if len(known) else None


def _range(values: np.ndarray) -> list[float | None]:
    return [_stat(values, np.min), _stat(values, np.max)]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_range(pair: list[float | None], spec: str) -> str:
    return "-" if None in pair else "-".join(format(v, spec) for v in pair)


def _scene_label(site_cfg) -> str:
    """A ray-traced site's scene (a file path shown by its stem), else the scenario."""
    scene = getattr(site_cfg, "scene", None)
    if scene is None:
        return site_cfg.scenario
    return Path(scene).stem if scene.lower().endswith(".xml") else scene


def site_summary(cfg, sites, infos: list[dict] | None = None) -> list[dict]:
    """Per-site statistics written to ``summary.json`` (one dict per site); a statistic
    of a field the station does not know (an imported station) is ``None``."""
    rows = []
    for site_cfg, data in zip(cfg.sites, sites, strict=True):
        rows.append(
            {
                "name": site_cfg.name,
                "scenario": site_cfg.scenario,
                "kind": site_kind(site_cfg),
                "scene": _scene_label(site_cfg),
                # ray-traced drops: candidate positions tried, accepted, rejected per stage
                "drops": (infos[len(rows)].get("generation") if infos else None),
                "num_samples": len(data),
                "los_fraction": _stat(data["los"], np.mean),
                "indoor_fraction": _stat(data["indoor"], np.mean),
                "mean_distance_m": _stat(data["distance_2d"], np.mean),
                "speed_range_mps": _range(data["speed"]),
                "snr_range_db": _range(data["snr_db"]),
                "beam_histogram": np.bincount(
                    data["beam_index"], minlength=cfg.radio.num_beams
                ).tolist(),
                "site_hash": cfg.site_hash(site_cfg),
            }
        )
    return rows


def check_output_dir(path: Path) -> Path:
    """Fail early, without creating anything, if ``path`` cannot become an output directory.

    ``path`` must be a directory or not exist yet; its nearest existing ancestor must be
    a writable directory. The directory itself is created later, once all inputs are good.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"--out {path} is a file; give a directory path (it is created if missing)"
        )
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"--out {path}: {ancestor} is a file, so the directory cannot be made")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {path}: {ancestor} is not writable; choose another directory")
    return path


def register(app: typer.Typer) -> None:
    # ``rantune data [--preset X --out Y]`` generates as always; sub-commands: ``generate``
    # (the same) and ``import`` (simulations/commands/data_import.py).
    data_app = typer.Typer(no_args_is_help=False)
    app.add_typer(data_app, name="data")

    @data_app.callback(invoke_without_command=True)
    @cli_errors
    def data(
        ctx: typer.Context,
        preset: str = typer.Option("default", help="Built-in preset name or path to a .toml."),
        out: Path = typer.Option(Path("runs/data"), help="Directory for summary.json and plots."),
        seed: int = typer.Option(0, help="Offset added to every site's seed."),
        partition: str = typer.Option(
            "natural", help="natural | iid | quantity | dirichlet-<alpha>"
        ),
        label: str = typer.Option("beam", help="Label for Dirichlet skew: beam or los."),
        cache: Path | None = typer.Option(None, help="Cache directory (default $RANTUNE_CACHE)."),
        rebuild: bool = typer.Option(
            False, help="Regenerate even if cached (fixes corrupt shards)."
        ),
    ) -> None:
        """Generate (or load from cache) a preset's channels and summarize them.

        `rantune data generate` is the same; `rantune data import FILE --out DIR` turns
        a user's own channels into a station data set."""
        if ctx.invoked_subcommand is not None:
            return
        cfg = load_preset(preset).with_seed(seed)
        part_cfg = PartitionConfig(
            scheme=partition, label=label, seed=seed, global_test_fraction=cfg.test_fraction
        )
        check_output_dir(out)
        sites = load_sites(cfg, cache_root=cache, rebuild=rebuild)
        # Partition before creating --out: a failure here leaves nothing behind.
        parts, beam_hist, los_hist = partition_sites(cfg, sites, part_cfg)
        rows = site_summary(cfg, sites, load_site_info(cfg, cache_root=cache))
        table = Table(title=f"preset {cfg.name} ({cfg.config_hash()})", box=box.SIMPLE_HEAD)
        for column in (
            "site",
            "kind",
            "scene",
            "samples",
            "tried",
            "LoS",
            "indoor",
            "dist m",
            "speed m/s",
            "SNR dB",
        ):
            text = column in ("site", "kind", "scene")  # fold names, never numbers
            table.add_column(
                column,
                justify="left" if text else "right",
                no_wrap=not text,
                overflow="fold" if text else "ellipsis",
                min_width=10 if text else None,
            )
        for row in rows:
            table.add_row(
                row["name"],
                row["kind"],
                row["scene"],
                str(row["num_samples"]),
                str(row["drops"]["candidates"]) if row["drops"] else "-",
                _fmt(row["los_fraction"], ".2f"),
                _fmt(row["indoor_fraction"], ".2f"),
                _fmt(row["mean_distance_m"], ".0f"),
                _fmt_range(row["speed_range_mps"], ".1f"),
                _fmt_range(row["snr_range_db"], ".0f"),
            )
        console.print(table)
        out = ensure_output_dir(out)
        plot_label_histograms(beam_hist, los_hist, part_cfg.scheme, out / "partition_labels.png")
        partitions = summarize_partition(parts, beam_hist, los_hist)
        summary = {
            "preset": cfg.name,
            "config_hash": cfg.config_hash(),
            "seed": seed,
            "radio": cfg.to_dict()["radio"],
            "sites": rows,
            "partition": partitions,
        }
        atomic_write_json(out / "summary.json", summary)
        console.print(f"wrote {out / 'summary.json'} and {out / 'partition_labels.png'}")

    data_app.command("generate")(data)
    data_import.register(data_app)
