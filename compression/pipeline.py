"""``compress(run_dir, out_dir, variants)``: every edge artifact of a run, measured.

Variants (each in ``ART/<variant>/`` with ``model.onnx`` and ``manifest.json``) are
listed in :mod:`rantune.compression.variants`: fp32, int8-dynamic, int8-static
(calibrated without pooled rows, :mod:`rantune.compression.calibrate`: per-station
MinMax ranges, or the server's generated channels under ``distill_mode="server"``),
pruned-int8, distilled-fp32 / distilled-int8 and sparse-int8.

Students (pruned and distilled) learn without pooled data (``settings.distill_mode``,
:mod:`rantune.compression.federated_distill`): ``federated`` (default) on each base
station's own rows, averaged by the server; ``server`` on channels the server
generates, teacher outputs only; ``off`` builds neither. Importance for pruning is
summed over the same participants. Each such manifest's ``distillation`` says which.

``ART/report.json``, ``ART/report.md`` and ``ART/pareto.png`` compare them with the
PyTorch eager fp32 teacher. With ``sign_key`` (an Ed25519 private key, PEM) every
variant's manifest is signed (``signature.json``, :mod:`rantune_edge.signing`).
Everything is built in a hidden temporary directory next to ``ART`` and renamed into
place at the end: a failure leaves ``ART`` untouched.
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rantune.compression.calibrate import calibrated_static_int8, check_source
from rantune.compression.data import DISTILL_MODES, CompressionData, run_data
from rantune.compression.distill import DistillSettings, build_student, student_config
from rantune.compression.export import check_parity, describe_onnx, export_onnx, run_onnx
from rantune.compression.federated_distill import (
    FEDERATED,
    run_distillation,
    source_importance,
    state_bytes,
)
from rantune.compression.measure import TORCH_REFERENCE, latency_table
from rantune.compression.merge import SourceRun, load_adapter, load_run
from rantune.compression.prune import PruneSettings, magnitude_prune, structured_prune
from rantune.compression.quantize_edge import preprocess, quantize_dynamic_int8
from rantune.compression.report import assess_targets, write_pareto, write_report_md
from rantune.compression.variants import (  # noqa: F401 - re-exported
    DEFAULT_VARIANTS,
    STUDENT_VARIANTS,
    VARIANTS,
    encoder_variants,
    parse_variants,
    resolve_variants,
)
from rantune.errors import InputError
from rantune.federated.rundir import json_safe
from rantune.fileio import atomic_write_json, sha256_file
from rantune.lora import count_parameters
from rantune.tasks import Task, predict
from rantune_edge import signing
from rantune_edge.manifest import (
    MODEL_NAME,
    Manifest,
    normalization_for,
    output_kind,
    write_manifest,
)


@dataclass(frozen=True)
class CompressSettings:
    """Knobs of :func:`compress` (defaults are what ``rantune compress`` uses).

    ``distill_mode``: one of :data:`~rantune.compression.data.DISTILL_MODES`;
    ``distill`` / ``recover``: one participant's local pass per round (``epochs`` =
    local epochs), over ``distill_rounds`` / ``recover_rounds`` rounds; ``server_rows``
    and ``server_preset``: the server's own drop (``server`` mode); ``max_train``: cap
    on each station's rows.
    """

    prune: PruneSettings = PruneSettings()
    recover: DistillSettings = DistillSettings(epochs=1, label_weight=0.5)
    recover_rounds: int = 2
    student_layers: int = 2
    student_ffn_dim: int | None = None
    distill: DistillSettings = DistillSettings(epochs=1)
    distill_rounds: int = 4
    distill_mode: str = "federated"
    server_rows: int = 2048
    server_preset: str | None = None
    calibration_method: str = "minmax"
    sparsity: float = 0.5
    threads: int = 1
    bench_warmup: int = 5
    bench_repeats: int = 50
    max_train: int | None = 4096
    max_calib: int = 256
    max_eval: int | None = 2048

    def __post_init__(self) -> None:
        if self.distill_mode not in DISTILL_MODES:
            raise InputError(
                f"distill mode {self.distill_mode!r} is unknown: choose one of "
                f"{', '.join(DISTILL_MODES)}"
            )
        for name in ("distill_rounds", "recover_rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name.replace('_', '-')}={value!r} is invalid: expected >= 1")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; give a directory path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            f"--out {out_dir} already holds files; choose a new directory or pass --force "
            "to replace it"
        )


def _quality(task: Task, output: Tensor, target: Tensor, teacher_out: Tensor) -> dict:
    metrics = task.metrics(output, target)
    if task.regression:  # predicted values (CSI, positions): error relative to the teacher
        err = (output - teacher_out).pow(2).flatten(1).sum(1)
        ref = teacher_out.pow(2).flatten(1).sum(1).clamp_min(1e-30)
        metrics["nmse_vs_teacher_db"] = float(10 * torch.log10((err / ref).mean()))
    else:
        agree = (output.argmax(-1) == teacher_out.argmax(-1)).float().mean()
        metrics["agreement_with_teacher"] = float(agree)
    return metrics


class _Job:
    """One compression run: shared state of the variant builders."""

    def __init__(
        self, run: SourceRun, data: CompressionData, root: Path, settings: CompressSettings, log
    ):
        self.run, self.data, self.root, self.settings, self.log = run, data, root, settings, log
        self.task = run.task
        self.work = root / ".work"
        self.work.mkdir()
        self.teacher = run.model
        self.teacher_out = predict(self.teacher, data.eval_x)
        self.teacher_metrics = self.task.metrics(self.teacher_out, data.eval_y)
        self.b1 = data.eval_x[:1].contiguous()
        self.b64 = data.eval_x[:64].contiguous()
        if len(self.b64) < 64:  # tile small eval sets up to a batch of 64
            reps = -(-64 // len(self.b64))
            self.b64 = self.b64.repeat(reps, *[1] * (self.b64.dim() - 1))[:64].contiguous()
        self._teacher_onnx: Path | None = None
        self._teacher_pre: Path | None = None
        self._teacher_bytes: int | None = None
        self._student: tuple | None = None
        self.built: dict[str, tuple[Path, Manifest]] = {}

    # ------------------------------------------------------------------ helpers
    def export(self, model: nn.Module, name: str) -> tuple[Path, float]:
        path = self.work / f"{name}.onnx"
        export_onnx(model, self.data.eval_x[:2], path)
        error = check_parity(model, path, self.data.eval_x[:64])
        pre = preprocess(path, self.work / f"{name}.pre.onnx")
        return pre, error

    def teacher_onnx(self) -> tuple[Path, Path]:
        if self._teacher_onnx is None:
            self.log("exporting the fp32 teacher to ONNX")
            self._teacher_pre, self.parity = self.export(self.teacher, "teacher")
            self._teacher_onnx = self.work / "teacher.onnx"
        return self._teacher_onnx, self._teacher_pre

    def source(self):
        """Where students learn (refused when distillation is off)."""
        if self.data.source is None:
            raise InputError(
                "pruned-int8 and distilled-int8 train a student, but distillation is off: "
                "pass --distill federated or --distill server, or leave those variants out"
            )
        return self.data.source

    def teacher_bytes(self) -> int:
        """What a station downloads once to rebuild the teacher: the run's adapter + head."""
        if self._teacher_bytes is None:
            federated = self.data.source is not None and self.data.source.mode == FEDERATED
            self._teacher_bytes = state_bytes(load_adapter(self.run.run_dir)) if federated else 0
        return self._teacher_bytes

    def finish(
        self, variant: str, src: Path, params: int, details: dict, distillation: dict | None = None
    ) -> dict:
        """Move ``src`` into ``variant/model.onnx`` and measure its quality and size
        (latency and the manifest come in :meth:`measure_and_write`); ``distillation``:
        the manifest's record of how a student learned."""
        directory = self.root / variant
        directory.mkdir()
        model_path = directory / MODEL_NAME
        shutil.copyfile(src, model_path)
        info = describe_onnx(model_path)
        output = torch.from_numpy(run_onnx(model_path, self.data.eval_x.numpy()))
        quality = _quality(self.task, output, self.data.eval_y, self.teacher_out)
        size = info["size_bytes"]
        key = self.task.primary_metric
        metrics = {
            **quality,
            f"teacher_{key}": self.teacher_metrics[key],
            "size_bytes": size,
            "compressed_size_bytes": len(zlib.compress(model_path.read_bytes(), 9)),
            "parameters": params,
        }
        output = {**info["output"], "kind": _output_kind(self.task, info["output"])}
        manifest = Manifest(
            task=self.task.name,
            variant=variant,
            input=info["input"],
            output=output,
            normalization=normalization_for(info["input"]["shape"]),
            label_names=_label_names(self.task, output),
            model={
                "file": MODEL_NAME,
                "sha256": sha256_file(model_path),
                "size_bytes": size,
                "opset": info["opset"],
                "parameters": params,
                "initializer_elements": info["parameters"],
                "max_batch": info["max_batch"],
            },
            source=self.run.source_info(),
            metrics=metrics,
            details=details,
            distillation=json_safe(_manifest_record(distillation)),
        )
        self.built[variant] = (model_path, manifest)
        self.log(
            f"{variant}: {size / 1e6:.3f} MB, {self.task.primary_metric} "
            f"{quality[self.task.primary_metric]:.4f}"
        )
        return {"variant": variant, **metrics, "details": details}

    def measure_and_write(self, reference: dict, results: list[dict]) -> None:
        """Time the teacher and every artifact side by side, then write the manifests."""
        s = self.settings
        self.log("measuring latency (teacher and artifacts interleaved)")
        models = {name: path for name, (path, _) in self.built.items()}
        table = latency_table(
            self.teacher, models, {"b1": self.b1, "b64": self.b64}, s.threads,
            s.bench_repeats, s.bench_warmup,
        )  # fmt: skip
        reference["latency"] = table[TORCH_REFERENCE]
        for entry in results:
            path, manifest = self.built[entry["variant"]]
            entry["latency"] = table[entry["variant"]]
            manifest.metrics = json_safe({**manifest.metrics, "latency": entry["latency"]})
            write_manifest(path.parent, manifest)

    # ----------------------------------------------------------------- variants
    def fp32(self) -> dict:
        onnx_path, _ = self.teacher_onnx()
        params = count_parameters(self.teacher)
        return self.finish("fp32", onnx_path, params, {"parity_max_abs": self.parity})

    def int8_dynamic(self) -> dict:
        _, pre = self.teacher_onnx()
        out = quantize_dynamic_int8(pre, self.work / "int8-dynamic.onnx")
        details = {"quantization": "dynamic int8, per-channel weights (MatMul/Gemm)"}
        return self.finish("int8-dynamic", out, count_parameters(self.teacher), details)

    def int8_static(self) -> dict:
        _, pre = self.teacher_onnx()
        out, details = calibrated_static_int8(
            pre, self.work / "int8-static.onnx", self.data.calib_x, self.data.calib_stations,
            self.settings.calibration_method, self.log,
        )  # fmt: skip
        details = {
            "quantization": "static QDQ: int8 per-channel weights, uint8 activations (U8S8)",
            **details,
        }
        return self.finish("int8-static", out, count_parameters(self.teacher), details)

    def pruned_int8(self) -> dict:
        s, source = self.settings, self.source()
        self.log(f"pruning heads and FFN channels (importance: {source.mode})")
        scores, scored = source_importance(
            self.teacher, self.task, source, s.prune, self.teacher_bytes()
        )
        pruned, summary = structured_prune(self.teacher, None, task=self.task,
                                           settings=s.prune, scores=scores)  # fmt: skip
        summary["importance_from"] = scored
        recovery = run_distillation(
            self.teacher, pruned, self.task, source, s.recover, s.recover_rounds,
            self.teacher_bytes(), self.log,
        )  # fmt: skip
        summary["recovery"] = {**asdict(s.recover), **recovery}
        pre, error = self.export(pruned, "pruned")
        out = quantize_dynamic_int8(pre, self.work / "pruned-int8.onnx")
        summary["parity_max_abs"] = error
        return self.finish("pruned-int8", out, count_parameters(pruned), summary, recovery)

    def student(self) -> tuple[nn.Module, dict, dict, Path]:
        """The distilled student (trained once per job): ``(model, details, history,
        fp32 ONNX path)``."""
        if self._student is None:
            s, source = self.settings, self.source()
            cfg = student_config(
                self.teacher.encoder.config, s.student_layers, ffn_dim=s.student_ffn_dim
            )
            self.log(f"distilling a {cfg.num_layers}-layer student ({source.mode})")
            radio = _radio(self.run)
            student, init = build_student(self.teacher, self.task, radio, cfg, seed=s.distill.seed)
            history = run_distillation(
                self.teacher, student, self.task, source, s.distill, s.distill_rounds,
                self.teacher_bytes(), self.log,
            )  # fmt: skip
            pre, error = self.export(student, "student")
            details = {
                "student_config": cfg.to_dict(),
                "init": init,
                "distill": {**asdict(s.distill), **history},
                "parity_max_abs": error,
            }
            self._student = (student, details, history, pre)
        return self._student

    def distilled_fp32(self) -> dict:
        student, details, history, _ = self.student()
        onnx_path = self.work / "student.onnx"  # the export before pre-processing
        return self.finish("distilled-fp32", onnx_path, count_parameters(student), details, history)

    def distilled_int8(self) -> dict:
        student, details, history, pre = self.student()
        out = quantize_dynamic_int8(pre, self.work / "distilled-int8.onnx")
        return self.finish("distilled-int8", out, count_parameters(student), details, history)

    def sparse_int8(self) -> dict:
        sparse, summary = magnitude_prune(self.teacher, self.settings.sparsity)
        pre, _ = self.export(sparse, "sparse")
        out = quantize_dynamic_int8(pre, self.work / "sparse-int8.onnx")
        summary["note"] = "size-only: zeros keep shapes; see compressed_size_bytes"
        return self.finish("sparse-int8", out, count_parameters(sparse), summary)


def _manifest_record(history: dict | None) -> dict:
    """The manifest's ``distillation``: the record without its per-round log."""
    if not history:
        return {}
    return {k: v for k, v in history.items() if k != "per_round"}


# Tasks whose output is not class logits (every other task is a classification).
OUTPUT_KINDS = {"prediction": "csi", "positioning": "position"}


def _output_kind(task: Task, spec: dict) -> str:
    """The manifest's ``output.kind``: a task's ``output_kind`` attribute if it has one,
    else :data:`OUTPUT_KINDS` by task name, else ``logits``."""
    kind = getattr(task, "output_kind", None) or OUTPUT_KINDS.get(task.name, "logits")
    return output_kind({**spec, "kind": kind})  # validated against what the edge reads


def _label_names(task: Task, output: dict) -> list[str]:
    """The task's class names; ``beam-0 .. beam-K-1`` for a task without fixed names."""
    if output["kind"] != "logits":
        return []
    return list(task.label_names) or [f"{task.name}-{i}" for i in range(output["shape"][-1])]


def _radio(run: SourceRun):
    from rantune.federated import splits

    return splits.preset(run.config.data).radio


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        out_dir.rename(backup)
        tmp.rename(out_dir)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def compress(
    run_dir: Path | str,
    out_dir: Path | str,
    variants: str | Iterable[str] | None = None,
    settings: CompressSettings = CompressSettings(),
    data: CompressionData | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    sign_key: Path | str | None = None,
) -> dict:
    """Build, measure and report the compressed variants of a run.

    Parameters
    ----------
    run_dir : federated (or centralized) run directory.
    out_dir : artifact directory ``ART`` (created; must be new or empty unless
        ``overwrite``).
    variants : names from :data:`VARIANTS` (default :data:`DEFAULT_VARIANTS`).
    settings : pruning, distillation, calibration and benchmark knobs.
    data : tensors to use instead of the run's own data (tests).
    overwrite : replace an existing non-empty ``out_dir``.
    log : progress callback (one line per step).
    sign_key : Ed25519 private key (PEM) that signs every variant's manifest; read
        before any work, so a bad key fails first.

    Returns
    -------
    dict
        The report (also written to ``ART/report.json``).

    Raises
    ------
    ValueError
        Unknown variant, run without adapter, static quantization without calibration
        data, ... (nothing is written into ``out_dir`` then).
    """
    log = log or (lambda message: None)
    names = resolve_variants(variants, settings.distill_mode)
    out_dir = Path(out_dir).expanduser().resolve()
    _check_out_dir(out_dir, overwrite)
    key = signing.load_private_key(sign_key) if sign_key is not None else None
    run = load_run(run_dir)
    names = encoder_variants(names, run.model, explicit=variants is not None, log=log)
    if data is None:
        log(f"loading {run.config.data.preset} data of the run")
        data = run_data(
            run.config,
            settings.max_train,
            settings.max_calib,
            settings.max_eval,
            distill=settings.distill_mode,
            server_rows=settings.server_rows,
            server_preset=settings.server_preset,
            calibrate="int8-static" in names,
        )
    if "int8-static" in names:
        shape = ["batch", *data.eval_x.shape[1:]]
        check_source(data.calib_x, data.calib_stations, shape, settings.calibration_method)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        job = _Job(run, data, tmp, settings, log)
        reference = {
            "variant": TORCH_REFERENCE,
            **job.teacher_metrics,
            "parameters": count_parameters(job.teacher),
        }
        results = [getattr(job, name.replace("-", "_"))() for name in names]
        job.measure_and_write(reference, results)
        signature = None
        if key is not None:
            key_id = signing.fingerprint(key.public_key())
            for name in names:
                signing.sign_artifact(tmp / name, key)
            log(f"signed {len(names)} manifest(s) with key {key_id[:12]}...")
            signature = {"algorithm": signing.ALGORITHM, "public_key_sha256": key_id}
        fp32_size = job.teacher_onnx()[0].stat().st_size
        reference["size_bytes"] = fp32_size
        report = {
            "task": run.task.name,
            "primary_metric": run.task.primary_metric,
            "higher_is_better": run.task.higher_is_better,
            "source": run.source_info(),
            "eval_rows": int(len(data.eval_x)),
            "reference": reference,
            "variants": results,
            "signature": signature,
            "settings": {
                "threads": settings.threads,
                "prune": asdict(settings.prune),
                "student_layers": settings.student_layers,
                "distillation": {
                    "mode": data.source.mode if data.source is not None else "off",
                    "rounds": settings.distill_rounds,
                    "recover_rounds": settings.recover_rounds,
                    "local_epochs": settings.distill.epochs,
                },
                "calibration_method": settings.calibration_method,
            },
        }
        report["targets"] = assess_targets(report)
        shutil.rmtree(job.work)
        report = json_safe(report)
        atomic_write_json(tmp / "report.json", report)
        write_report_md(tmp / "report.md", report)
        write_pareto(tmp / "pareto.png", report)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir}")
    return report
