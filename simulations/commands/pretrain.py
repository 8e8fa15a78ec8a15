"""``rantune pretrain``: masked channel modeling of the channel encoder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rantune.errors import InputError
from rantune.pretrain_settings import PretrainSettings
from rantune.simulations.commands import set_torch_threads
from rantune.simulations.errors import cli_errors, ensure_output_dir

console = Console()
D = PretrainSettings()  # the one source of every default below


def pair_text(pair: tuple[float, float]) -> str:
    return f"{pair[0]:g},{pair[1]:g}"


def ints_text(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def parse_pair(text: str, what: str) -> tuple[float, float]:
    """``"-5,25"`` -> ``(-5.0, 25.0)``; ``ValueError`` with a hint otherwise."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as err:
        raise InputError(f"{what}={text!r} is invalid: expected two numbers, e.g. -5,25") from err
    return low, high


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """``"2,4,8"`` -> ``(2, 4, 8)``; ``InputError`` with a hint otherwise."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise InputError(f"{what}={text!r} is invalid: expected integers, e.g. 2,4,8") from err


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    @cli_errors
    def pretrain_command(
        preset: str = typer.Option(D.preset, help="Preset name or .toml path to pretrain on."),
        size: str = typer.Option(D.size, help="Model size: tiny or small."),
        steps: int = typer.Option(D.steps, help="Optimizer steps."),
        batch_size: int = typer.Option(D.batch_size, help="Samples per step."),
        lr: float = typer.Option(D.lr, help="Peak AdamW learning rate."),
        min_lr_ratio: float = typer.Option(D.min_lr_ratio, help="Final lr as a share of the peak."),
        warmup_steps: int = typer.Option(D.warmup_steps, help="Linear warm-up steps."),
        weight_decay: float = typer.Option(D.weight_decay, help="AdamW weight decay (matrices only)."),
        mask_ratio: float = typer.Option(D.mask_ratio, help="Share of patches hidden per sample."),
        replacement: bool = typer.Option(
            D.replacement, help="LWM 80/10/10: mask token / random patch / unchanged."
        ),
        noise: str = typer.Option(D.noise, help="Noise augmentation: none, awgn or dataset."),
        noise_probability: float = typer.Option(D.noise_probability, help="Share of samples made noisy."),
        noise_snr_db: str = typer.Option(pair_text(D.noise_snr_db), help="SNR range of the added noise, dB."),
        weight_patches: float = typer.Option(
            D.weight_patches, help="Share of samples with random patches behind the mask token."
        ),
        weight_antennas: float = typer.Option(
            D.weight_antennas, help="Share observing only the first n antennas (zeros elsewhere)."
        ),
        weight_pilots: float = typer.Option(
            D.weight_pilots, help="Share observing only every k-th subcarrier (zeros elsewhere)."
        ),
        weight_rsrp: float = typer.Option(D.weight_rsrp, help="Share observing Set B beam RSRPs."),
        weight_denoise: float = typer.Option(
            D.weight_denoise, help="Share denoising the full noisy LS estimate."
        ),
        mask_antennas: str = typer.Option(ints_text(D.mask_antennas), help="Observed antenna counts (first n)."),
        pilot_spacings: str = typer.Option(ints_text(D.pilot_spacings), help="Observed every-k-th subcarrier."),
        set_b_spacings: str = typer.Option(ints_text(D.set_b_spacings), help="Set B = every k-th beam."),
        rsrp_error_db: float = typer.Option(D.rsrp_error_db, help="RSRP measurement error std, dB."),
        init: str = typer.Option(
            D.init, help="Start from a checkpoint (shipped name or .safetensors) or none."
        ),
        held_out_sites: int = typer.Option(D.held_out_sites, help="Sites (from the end) kept for evaluation."),
        checkpoint_every: int = typer.Option(D.checkpoint_every, help="Steps between resumable states."),
        stop_after: int | None = typer.Option(
            None, help="Stop (state saved, no card) after this many steps; rerun to resume."
        ),
        seed: int = typer.Option(D.seed, help="Seeds the model init and every random draw."),
        out: Path = typer.Option(
            Path("runs/pretrain"), help="Where <name>.safetensors + .json go."
        ),
        name: str = typer.Option("tiny", help="Checkpoint name."),
        run_dir: Path | None = typer.Option(
            None, help="Resumable state (default: runs/pretrain/<name>-run)."
        ),
        fresh: bool = typer.Option(False, help="Ignore saved state and start over."),
        threads: int = typer.Option(
            1, help="torch CPU threads (1 is fastest for tiny on a busy 2-core machine)."
        ),
    ) -> None:
        """Pretrain the encoder (masked channel modeling on the tasks' observations); resumable."""
        from rantune.pretraining import pretrain

        set_torch_threads(threads)
        settings = PretrainSettings(
            preset=preset,
            size=size,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            min_lr_ratio=min_lr_ratio,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            mask_ratio=mask_ratio,
            replacement=replacement,
            noise=noise,
            noise_probability=noise_probability,
            noise_snr_db=parse_pair(noise_snr_db, "--noise-snr-db"),
            weight_patches=weight_patches,
            weight_antennas=weight_antennas,
            weight_pilots=weight_pilots,
            weight_rsrp=weight_rsrp,
            weight_denoise=weight_denoise,
            mask_antennas=parse_ints(mask_antennas, "--mask-antennas"),
            pilot_spacings=parse_ints(pilot_spacings, "--pilot-spacings"),
            set_b_spacings=parse_ints(set_b_spacings, "--set-b-spacings"),
            rsrp_error_db=rsrp_error_db,
            init=init,
            held_out_sites=held_out_sites,
            checkpoint_every=checkpoint_every,
            seed=seed,
        )
        out = ensure_output_dir(out)
        run_dir = ensure_output_dir(run_dir or Path("runs/pretrain") / f"{name}-run")
        card = pretrain(
            settings, run_dir, out, name=name, fresh=fresh, log=console.print, stop_after=stop_after
        )
        if card is None:
            return
        results = card["results"]
        console.print(
            f"[bold]{name}[/]: masked NMSE {results['masked_nmse_db_held_out_sites']:.2f} dB on "
            f"held-out sites {', '.join(card['data']['held_out_sites'])}; "
            f"{results['throughput_samples_per_s']} samples/s"
        )
