"""``rantune data import``: a user's own channels (``.npz``, HDF5, ``.mat``) become a station.

    rantune data import measured.npz --out stations/downtown --los-key los \\
        --positions-key pos --bs-position 0,0,25 --num-beams 16

writes ``stations/downtown/station.safetensors`` and ``station.json`` (see
:mod:`rantune.channels.station`); list the directory in a preset with
``scenario = "import"`` and ``path = "stations/downtown"``. Bad input (wrong rank or
dtype, NaN/Inf, mismatched lengths, an unknown array name, an unreadable file) is one
error line, exit status 2, and nothing is written.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rantune.config import ImportSiteConfig, RadioConfig
from rantune.errors import InputError
from rantune.simulations.errors import cli_errors

console = Console()

_SITE_DEFAULTS = {f.name: f.default for f in fields(ImportSiteConfig)}
_RADIO_DEFAULTS = {f.name: f.default for f in fields(RadioConfig)}
_SNR = ",".join(f"{v:g}" for v in _SITE_DEFAULTS["snr_range_db"])


def _numbers(text: str, option: str, sizes: tuple[int, ...]) -> tuple[float, ...]:
    """``"1,2,3"`` -> ``(1.0, 2.0, 3.0)``, with ``len`` in ``sizes``."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in sizes:
        counts = " or ".join(str(n) for n in sizes)
        raise InputError(f"{option} {text!r}: expected {counts} comma-separated numbers")
    return values


def _summary(out: Path, manifest: dict) -> Table:
    table = Table(title=f"station {manifest['name']} ({manifest['num_samples']} samples)")
    for column in ("field", "shape", "dtype", "source"):
        table.add_column(column, no_wrap=True)
    for name, info in manifest["fields"].items():
        shape = "x".join(str(n) for n in info["shape"])
        table.add_row(name, shape, info["dtype"], info["source"])
    return table


def register(data_app: typer.Typer) -> None:
    """Add ``import`` to the ``rantune data`` group."""

    @data_app.command("import")
    @cli_errors
    def import_command(
        file: Path = typer.Argument(..., help="A .npz, .h5/.hdf5 or .mat (v5 or v7.3) file."),
        out: Path = typer.Option(..., help="Station directory to create (new or empty)."),
        name: str = typer.Option(None, help="Station name (default: the file's stem)."),
        csi_key: str = typer.Option(
            None,
            help="Complex CSI [N, A, S] or [N, T, A, S] (or real [..., 2] = real, imag); "
            f"default {_SITE_DEFAULTS['csi_key']!r}.",
        ),
        positions_key: str = typer.Option(
            None, help="UT positions [N, 2|3] in metres (needs --bs-position)."
        ),
        los_key: str = typer.Option(None, help="LoS flags [N] (0/1); without: LoS unknown."),
        snr_key: str = typer.Option(None, help="Per-sample SNR [N] in dB for csi_noisy."),
        snr_range_db: str = typer.Option(
            None,
            help=f"LOW,HIGH: SNRs drawn per sample when the file has none; default {_SNR}.",
        ),
        bs_position: str = typer.Option(None, help="X,Y[,Z]: the BS in the positions' frame."),
        num_beams: int = typer.Option(
            None, help=f"DFT codebook size; default {_RADIO_DEFAULTS['num_beams']}."
        ),
        pilot_spacing: int = typer.Option(
            None,
            help="csi_noisy pilots on every k-th subcarrier; default "
            f"{_RADIO_DEFAULTS['pilot_spacing']}.",
        ),
        preset: str = typer.Option(
            None,
            help="Check the file against this preset's radio block and take its "
            "num_beams and pilot_spacing.",
        ),
        seed: int = typer.Option(None, help="Seed of SNR draws and estimation noise."),
        force: bool = typer.Option(False, help="Replace an existing station at --out."),
    ) -> None:
        """Import a user's channel file as one station data set (nothing written on error)."""
        from rantune.channels.importer import import_site
        from rantune.channels.station import check_station_target, write_station

        given = {
            "csi_key": csi_key,
            "positions_key": positions_key,
            "los_key": los_key,
            "snr_key": snr_key,
            "seed": seed,
        }
        if snr_range_db is not None:
            given["snr_range_db"] = _numbers(snr_range_db, "--snr-range-db", (2,))
        if bs_position is not None:
            given["bs_position_m"] = _numbers(bs_position, "--bs-position", (2, 3))
        options = {key: value for key, value in given.items() if value is not None}
        site = ImportSiteConfig(name=name or file.stem, path=str(file), **options)
        check_station_target(out, replace=force)
        radio = None
        if preset is not None:
            from rantune.presets import load_preset

            if num_beams is not None or pilot_spacing is not None:
                raise InputError(
                    "--num-beams / --pilot-spacing come from --preset's [radio]; drop one"
                )
            radio = load_preset(preset).radio
        data, manifest = import_site(site, radio, num_beams=num_beams, pilot_spacing=pilot_spacing)
        write_station(out, data, manifest, replace=force)
        manifest["num_samples"] = len(data)
        console.print(_summary(out, manifest))
        unknown = ", ".join(manifest["unknown_fields"]) or "none"
        console.print(f"wrote {out} (station.safetensors, station.json); unknown: {unknown}")
