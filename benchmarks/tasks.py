"""Downstream tasks: pretrained+LoRA vs from-scratch vs probe vs classical baseline.

For each task (``los``, ``beam``, ``prediction``) on the ``default`` preset (base
stations never seen in pretraining), at labelled budgets of 1%, 10% and 100% of the
pooled training rows (natural split, union of client train rows), over 3 seeds:

- ``lora``: the shipped pretrained ``tiny`` encoder + LoRA (``rantune train`` defaults) + head;
- ``scratch``: the same architecture, random init, everything trains;
- ``probe``: the shipped encoder frozen, only the head trains;
- ``baseline``: the task's classical method on the same test rows (the LoS threshold
  is fitted on the same labelled rows as the learned models).

All learned methods share one compute schedule per task (optimizer steps per budget,
see ``SCHEDULE``): this is a CPU benchmark and the step caps are reported. Also
reported: the shipped model's masked-reconstruction NMSE on held-out base stations
(the pretrain preset's held-out sites, from the card, and the default preset's global
test rows, with an LMMSE-interpolation reference) and its pretraining throughput.

Usage::

    python benchmarks/tasks.py                    # writes benchmarks/results/tasks.{json,md}
    python benchmarks/tasks.py --workers 2 --out /tmp/bench
    python benchmarks/tasks.py --render           # tasks.md from the committed JSON
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from multiprocessing import get_context

import common
import numpy as np
from tasks_report import MODES, markdown

NAME = "tasks"
TASKS = ("los", "beam", "prediction")
BUDGETS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)
# Per task: batch size, at least min_steps, at most max_steps optimizer steps, 1 epoch
# otherwise. Prediction encodes 4 slots per sample, hence the smaller batch and cap.
SCHEDULE = {
    "los": {"batch_size": 32, "epochs": 1, "min_steps": 60, "max_steps": 120},
    "beam": {"batch_size": 32, "epochs": 1, "min_steps": 60, "max_steps": 120},
    "prediction": {"batch_size": 8, "epochs": 1, "min_steps": 50, "max_steps": 80},
}
# Share of the global test rows scored (a fixed seeded subset, the same for every method
# and baseline): the CPU this benchmark runs on is shared.
TEST_SHARE = 0.5
SUBSETS = {
    "los": {"snr < 5 dB": ("snr_db", -99.0, 5.0), "snr >= 15 dB": ("snr_db", 15.0, 99.0)},
    "beam": {"snr < 5 dB": ("snr_db", -99.0, 5.0), "snr >= 15 dB": ("snr_db", 15.0, 99.0)},
    "prediction": {
        "speed >= 20 m/s": ("speed", 20.0, 1e9),
        "speed < 3 m/s": ("speed", -1.0, 3.0),
    },
}
_STATE: dict = {}


def _init_worker(preset: str) -> None:
    import torch

    from rantune.channels import load_pooled
    from rantune.presets import load_preset
    from rantune.simulations.commands.train import pooled_split

    torch.set_num_threads(1)
    cfg = load_preset(preset)
    data = load_pooled(cfg, progress=False)
    train_rows, test_rows = pooled_split(data)
    keep = np.random.default_rng(2024).random(len(test_rows)) < TEST_SHARE
    _STATE.update(cfg=cfg, data=data, split=(train_rows, test_rows[keep]))


def subset_masks(task: str, data, test_rows: np.ndarray) -> dict[str, np.ndarray]:
    masks = {}
    for name, (field, low, high) in SUBSETS[task].items():
        values = data[field][test_rows]
        masks[name] = (values >= low) & (values < high)
    return masks


def _run_job(job: tuple[str, str, tuple[float, ...]]) -> list[dict]:
    """One (task, mode) over the given budgets, 3 seeds each (probe shares its features)."""
    from rantune.simulations.commands.train import CentralizedSettings, run_one

    task, mode, budgets = job
    data, split, cfg = _STATE["data"], _STATE["split"], _STATE["cfg"]
    subsets = subset_masks(task, data, split[1])
    cache: dict = {}
    results = []
    for budget in budgets:
        settings = CentralizedSettings(
            task=task, mode=mode, budget=budget, seeds=SEEDS, **SCHEDULE[task]
        )
        started = time.perf_counter()
        runs = [
            run_one(settings, seed, data, cfg.radio, split, cache=cache, subsets=subsets)
            for seed in SEEDS
        ]
        results.append(
            {
                "task": task,
                "mode": mode,
                "budget": budget,
                "lr": settings.learning_rate,
                "runs": runs,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(f"  done {task}/{mode}/{budget:g} in {results[-1]['seconds']} s", flush=True)
    return results


def baselines(data, split) -> dict:
    """Classical baselines per task and budget (LoS threshold fitted on the budget rows)."""
    from rantune.tasks import get_task
    from rantune.training import label_budget

    train_rows, test_rows = split
    out: dict = {}
    for name in TASKS:
        task = get_task(name)
        masks = subset_masks(name, data, test_rows)
        out[name] = {}
        for budget in BUDGETS:
            per_seed = []
            for seed in SEEDS:
                rows = label_budget(train_rows, budget, seed)
                result = {"metrics": task.baseline(data, rows, test_rows)}
                result["subset_metrics"] = {
                    s: task.baseline(data, rows, test_rows[m]) for s, m in masks.items() if m.any()
                }
                per_seed.append(result)
            out[name][str(budget)] = per_seed
    return out


def masked_reconstruction(data, split, limit: int | None = None) -> dict:
    """Shipped model's masked NMSE on the default preset's test rows, with an LMMSE reference.

    LMMSE: masked entries estimated from the visible ones with the channel covariance
    of the pretraining sites, ``h_m = C_mv C_vv^-1 h_v``, on the same masks.
    """
    import torch

    from rantune.channels import load_pooled
    from rantune.model.checkpoint import shipped_card
    from rantune.model.encoder import csi_to_real
    from rantune.model.masking import masked_nmse, random_mask
    from rantune.presets import load_preset
    from rantune.pretraining import load_masked_model

    card = shipped_card("tiny")
    model = load_masked_model("tiny")
    ratio = card["pretraining"]["mask_ratio"]
    pre_cfg = load_preset(card["data"]["preset"])
    pre = load_pooled(pre_cfg, progress=False)
    train_sites = len(pre_cfg.sites) - card["pretraining"]["held_out_sites"]
    h_pre = pre["csi"][pre["site_index"] < train_sites].reshape(-1, 16 * 32).astype(np.complex128)
    cov = h_pre.T @ h_pre.conj() / len(h_pre)  # E[h h^H]
    rows = split[1]
    if limit is not None and len(rows) > limit:  # the LMMSE costs one solve per row
        rows = rows[np.linspace(0, len(rows) - 1, limit).astype(int)]  # every site
    csi = data["csi"][rows]
    antennas, subcarriers = csi.shape[1:]
    patch_of = (
        (np.arange(antennas)[:, None] // model.encoder.config.patch_antennas)
        * (subcarriers // model.encoder.config.patch_subcarriers)
        + np.arange(subcarriers)[None, :] // model.encoder.config.patch_subcarriers
    ).reshape(-1)
    rows, cols = model.encoder.grid(antennas, subcarriers)
    generator = torch.Generator().manual_seed(0)
    model_nmse, lmmse_nmse = [], []
    for start in range(0, len(csi), 256):
        batch = csi[start : start + 256]
        x = csi_to_real(batch)
        mask = random_mask(len(batch), rows * cols, ratio, generator)
        with torch.no_grad():
            model_nmse.append(masked_nmse(model(x, mask), model.target(x), mask))
        for h, m in zip(batch.reshape(len(batch), -1), mask.numpy(), strict=True):
            hidden = m[patch_of]
            c_mv = cov[np.ix_(hidden, ~hidden)]
            c_vv = cov[np.ix_(~hidden, ~hidden)]
            estimate = c_mv @ np.linalg.solve(c_vv + 1e-9 * np.eye(len(c_vv)), h[~hidden])
            err = np.sum(np.abs(estimate - h[hidden]) ** 2) / np.sum(np.abs(h[hidden]) ** 2)
            lmmse_nmse.append(err)
    return {
        "mask_ratio": ratio,
        "pretrain_held_out_sites": card["data"]["held_out_sites"],
        "masked_nmse_db_pretrain_held_out_sites": card["results"]["masked_nmse_db_held_out_sites"],
        "masked_nmse_db_default_test": float(10 * np.log10(float(torch.cat(model_nmse).mean()))),
        "lmmse_masked_nmse_db_default_test": float(10 * np.log10(np.mean(lmmse_nmse))),
        "num_default_test": int(len(csi)),
        "throughput_samples_per_s": card["results"]["throughput_samples_per_s"],
        "pretrain_seconds": card["results"]["train_seconds"],
        "pretrain_threads": card["results"]["torch_threads"],
        "reproduce": card["reproduce"],
    }


def main(argv: list[str] | None = None) -> None:
    global BUDGETS, SEEDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="2 steps, 1 seed, budget 1%%: checks the pipeline"
    )
    common.add_common_flags(parser)
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return
    if args.smoke:
        BUDGETS, SEEDS = (0.01,), (0,)
        for schedule in SCHEDULE.values():
            schedule.update(min_steps=2, max_steps=2)
    started = time.perf_counter()
    _init_worker(args.preset)
    data, split = _STATE["data"], _STATE["split"]
    print("baselines and masked reconstruction ...", flush=True)
    base = baselines(data, split)
    recon = masked_reconstruction(data, split, limit=64 if args.smoke else 512)
    print(f"  masked NMSE default test {recon['masked_nmse_db_default_test']:.2f} dB", flush=True)
    # Most expensive first so the two workers finish together.
    jobs = [
        (t, m, (b,))
        for t in ("prediction", "los", "beam")
        for m in ("lora", "scratch")
        for b in sorted(BUDGETS, reverse=True)
    ]
    jobs += [(t, "probe", BUDGETS) for t in TASKS]
    context = get_context("fork")
    with context.Pool(args.workers, initializer=_init_worker, initargs=(args.preset,)) as pool:
        results = [item for chunk in pool.imap_unordered(_run_job, jobs) for item in chunk]
    results.sort(key=lambda r: (TASKS.index(r["task"]), MODES.index(r["mode"]), r["budget"]))
    from rantune.simulations.commands.train import DEFAULT_LR, CentralizedSettings
    from rantune.tasks import get_task

    lora = asdict(CentralizedSettings(task="los", mode="lora").lora)
    report = {
        "provenance": common.provenance(argv),
        "wall_seconds": time.perf_counter() - started,
        "workers": args.workers,
        "preset": args.preset,
        "num_train_pool": int(len(split[0])),
        "num_test": int(len(split[1])),
        "test_share": TEST_SHARE,
        "budgets": list(BUDGETS),
        "seeds": list(SEEDS),
        "schedule": SCHEDULE,
        "lr": {m: DEFAULT_LR[m] for m in MODES},
        "lora": {"r": lora["r"], "alpha": lora["alpha"], "targets": list(lora["targets"])},
        "task_info": {
            t: {"primary_metric": get_task(t).primary_metric,
                "higher_is_better": get_task(t).higher_is_better}
            for t in TASKS
        },
        "subsets": {t: {k: list(v) for k, v in s.items()} for t, s in SUBSETS.items()},
        "masked_reconstruction": recon,
        "runs": results,
        "baseline_runs": base,
    }
    common.save_json(args.out / f"{NAME}.json", report)
    common.save_text(args.out / f"{NAME}.md", markdown(report))
    print(f"wrote {args.out / NAME}.json and .md in {report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
