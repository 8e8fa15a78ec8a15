"""Shared helpers of the benchmark scripts: results folder, JSON I/O, provenance, tables, CIs.

Every script under ``benchmarks/`` runs as ``python benchmarks/<name>.py``; Python
puts this folder first on ``sys.path``, so ``import common`` finds this module and
``import rantune`` finds the installed (editable) package. No script edits ``sys.path``.

One rule holds for every results file: each number in its Markdown is produced
by code from the measured JSON next to it, and the Markdown names the command
and commit that produced the JSON (:func:`provenance`, :func:`provenance_lines`).
``--render`` rebuilds the Markdown from the committed JSON without measuring again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rantune.fileio import atomic_write_bytes, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIDENCE = 0.95
"""Confidence level of every interval over seeds in the results."""


# ---------------------------------------------------------------------- JSON and text
def load_json(path: Path) -> dict | list | None:
    """The JSON stored at ``path``, or ``None`` when the file does not exist.

    A file that exists but does not parse raises (a half-written result is never used).
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to measure again") from exc


def save_json(path: Path, payload: object) -> None:
    """Write ``payload`` to ``path`` atomically (sorted keys, two-space indent)."""
    atomic_write_json(Path(path), payload)


def save_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, ending it with exactly one newline."""
    atomic_write_bytes(Path(path), (text.rstrip("\n") + "\n").encode())


def run_flat_config(run_dir: Path) -> dict:
    """The resolved flat run config a run directory was written with (``config.json``)."""
    raw = load_json(Path(run_dir) / "config.json")
    if not isinstance(raw, dict) or not isinstance(raw.get("flat"), dict):
        raise ValueError(f"{run_dir}/config.json is missing or has no 'flat' section")
    return raw["flat"]


# ------------------------------------------------------------------------ provenance
def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def head_commit() -> str:
    """Short sha of ``HEAD`` ("unknown" outside a git checkout)."""
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def provenance(argv: Sequence[str] | None = None, script: str | None = None) -> dict:
    """What produced a result: command line, commit, dirty flag, machine, threads, load.

    Parameters
    ----------
    argv
        The script's arguments (default ``sys.argv[1:]``).
    script
        The script's path relative to the repository (default: ``sys.argv[0]``).

    Returns
    -------
    dict
        ``command`` (a shell line that reruns it), ``commit`` (short sha), ``dirty``
        (tracked files of the package or benchmarks differ from the commit; results are
        not code), ``date``
        (UTC, ISO 8601), ``machine`` (processor, cores, platform, Python), ``torch``
        (version and intra-op threads, when torch is imported), ``load`` (1/5/15-minute
        load average at the call).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if script is None:
        script_path = Path(sys.argv[0]).resolve()
        try:
            script = script_path.relative_to(ROOT).as_posix()
        except ValueError:
            script = script_path.name
    dirty = _git(
        "status", "--porcelain", "--untracked-files=no", "--",
        "rantune", "server", "client", "compression", "simulations", "benchmarks",
        ":(exclude)benchmarks/results",  # a benchmark's own output is not a code change
    )
    torch = sys.modules.get("torch")
    return {
        "command": shlex.join(["python", script, *args]),
        "commit": head_commit(),
        "dirty": bool(dirty),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "torch": None if torch is None else {
            "version": torch.__version__, "threads": torch.get_num_threads()
        },
        "load": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def unknown_provenance(command: str, before: str | None = None) -> dict:
    """Provenance for a result measured before provenance was recorded.

    The commit is stated as ``"unknown (before <sha>)"``, where ``<sha>`` is the
    commit at which this record is added; nothing is invented.
    """
    return {"command": command, "commit": f"unknown (before {before or head_commit()})"}


def provenance_lines(prov: dict | Iterable[dict]) -> list[str]:
    """Markdown lines naming the command(s) and commit(s) of one or more provenance records."""
    records = [prov] if isinstance(prov, dict) else list(prov)
    lines = []
    for p in records:
        commit = p.get("commit", "unknown")
        if p.get("dirty"):
            commit += " + uncommitted edits"
        line = f"Produced by `{p['command']}` at commit {commit}"
        if p.get("date"):
            line += f" on {p['date']}"
        machine = p.get("machine")
        if isinstance(machine, dict):
            line += f"; {machine.get('processor', '?')}, {machine.get('cores', '?')} cores"
        if p.get("torch"):
            threads = p["torch"]["threads"]
            line += f", torch {p['torch']['version']} ({threads} thread{'s' * (threads != 1)})"
        if p.get("load"):
            line += f", load {' / '.join(f'{x:.2f}' for x in p['load'])}"
        lines.append(line + ".  ")
    if lines:
        lines[-1] = lines[-1].rstrip()
    return lines


# ---------------------------------------------------------------------- memory
class PeakSampler:
    """Peak summed RSS and PSS of a process tree (a root process and its descendants),
    and the CPU seconds its processes used, via /proc.

    PSS (proportional set size) splits each shared page between the processes that
    map it, so forked workers that share their parent's pages are not counted twice
    as they are in RSS. CPU seconds: the last ``utime + stime`` seen of every process
    of the tree (a process that exits between two samples loses at most ``interval``).

    Parameters
    ----------
    root_pid : the tree's root.
    interval : seconds between samples.
    include_root : count the root itself (off: only its descendants, e.g. the runs a
        light benchmark driver starts).

    Attributes
    ----------
    peak, peak_pss : bytes.
    cpu_s : CPU seconds of every process seen.
    """

    def __init__(self, root_pid: int, interval: float = 0.5, include_root: bool = True) -> None:
        self.root, self.interval, self.peak, self.peak_pss = root_pid, interval, 0, 0
        self.include_root = include_root
        self._ticks: dict[tuple[int, str], int] = {}  # (pid, start time) -> utime + stime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    def _tree(self) -> set[int]:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                except (OSError, IndexError, ValueError):
                    pass
        tree, frontier = {self.root}, [self.root]
        while frontier:
            pid = frontier.pop()
            kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
            tree.update(kids)
            frontier.extend(kids)
        return tree if self.include_root else tree - {self.root}

    def _sample(self) -> tuple[int, int]:
        rss = pss = 0
        for pid in self._tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                self._ticks[(pid, fields[19])] = int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return rss, pss

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, pss = self._sample()
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -------------------------------------------------------------------- statistics
def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t quantile for ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, df))


def half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Student-t confidence half-width of a mean from the sample std of ``n`` values."""
    if n < 2:
        return math.nan
    return t_quantile(n - 1, confidence) * std / math.sqrt(n)


def mean_ci(values: Iterable[float | None], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean and Student-t confidence half-width over seeds.

    ``None`` and NaN values are skipped. Returns ``(mean, half_width, n)``; the
    half-width is NaN for fewer than two values and the mean NaN for none.
    """
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    std = statistics.stdev(finite) if n > 1 else math.nan
    return statistics.fmean(finite), half_width(std, n, confidence), n


def fmt(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    """A number for a table cell ("—" for missing or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * scale:.{digits}f}"


def fmt_ci(values: Iterable[float | None], digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± half-width`` (95% Student t over the values), ``mean`` for one value."""
    return fmt_mean_ci(*mean_ci(values), digits=digits, scale=scale)


def fmt_mean_ci(mean: float, half: float, n: int, digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± half`` for ``n`` >= 2 values, ``mean`` for one, "—" for none."""
    if n == 0:
        return "—"
    if n == 1 or math.isnan(half):
        return fmt(mean, digits, scale)
    return f"{fmt(mean, digits, scale)} ± {fmt(half, digits, scale)}"


def ci_note(n: int) -> str:
    """The sentence explaining ``±`` in a table with ``n`` seeds."""
    return (
        f"± is the {CONFIDENCE:.0%} Student-t confidence half-width over {n} seeds "
        f"(t = {t_quantile(n - 1):.2f})." if n > 1 else "One seed: no interval."
    )


# -------------------------------------------------------------------------- tables
def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> list[str]:
    """A Markdown table as lines.

    ``align`` has one character per column: ``l`` (left) or ``r`` (right); default
    first column left, the rest right.
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} columns, header {len(header)}")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return ["| " + " | ".join(header) + " |", rule, *body]


def section(title: str, *blocks: Iterable[str], level: int = 2) -> list[str]:
    """A heading followed by blocks of lines, each block followed by a blank line."""
    lines = [f"{'#' * level} {title}", ""]
    for block in blocks:
        block = list(block)
        if block:
            lines += [*block, ""]
    return lines


# -------------------------------------------------------------------------- render
def add_common_flags(parser, work: Path | None = None) -> None:
    """``--out`` (results) and ``--render``; with ``work`` also ``--work`` (run
    directories) and ``--pretrained`` (the encoder of the runs)."""
    if work is not None:
        parser.add_argument(
            "--pretrained", default="auto", help="encoder: tiny | none | .safetensors path | auto"
        )
        parser.add_argument("--work", type=Path, default=work, help="run directories (resumable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the Markdown from the JSON in the results folder (no measuring)",
    )


def parse_args(parser, argv, name: str, markdown, part_required: bool = False):
    """Parse ``argv``; with ``--render`` rewrite ``<out>/<name>.md`` and return ``None``.

    ``--pretrained auto`` becomes the shipped ``tiny`` encoder if present, else ``none``.
    """
    args = parser.parse_args(argv)
    if args.render:
        render(args.out / f"{name}.json", args.out / f"{name}.md", markdown)
        return None
    if part_required and args.part is None:
        parser.error("give a part (see the choices above) or --render")
    if getattr(args, "pretrained", None) == "auto":
        from rantune.federated.workload import resolve_checkpoint

        try:
            resolve_checkpoint("tiny")
            args.pretrained = "tiny"
        except ValueError:
            args.pretrained = "none"
    return args


def render(json_path: Path, md_path: Path, markdown) -> str:
    """Rewrite ``md_path`` as ``markdown(<content of json_path>)``; returns the text."""
    payload = load_json(json_path)
    if payload is None:
        raise FileNotFoundError(f"{json_path} does not exist: run the benchmark first")
    text = markdown(payload)
    save_text(md_path, text)
    print(f"wrote {md_path}", flush=True)
    return text
