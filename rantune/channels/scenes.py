"""Sionna RT scenes: name resolution, content hash, ray-tracer start-up, geometry checks.

Nothing here imports Sionna RT at module level: resolving a scene name and hashing
its files only read the files of the installed ``sionna-rt`` distribution, so a cache
hit never starts the ray tracer (Dr.Jit's LLVM backend). :func:`start_ray_tracer`
selects the CPU variant ``llvm_ad_mono_polarized`` explicitly, before Sionna RT would
pick a CUDA one, and turns a failure to start into an :class:`RayTracerUnavailable`
that names the fix.

A scene is loaded afresh for every site (Munich, the largest built-in city used here,
loads in under a second): a site adds its own transmitter and receivers, so sharing
a loaded scene between sites would need clean-up that a failure could skip.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rantune.errors import InputError
from rantune.fileio import sha256_file

RT_VARIANT = "llvm_ad_mono_polarized"
SIONNA_RT_REQUIREMENT = "sionna-rt==2.0.1"
SCENES_SUBDIR = "sionna/rt/scenes"
LLVM_FIX = (
    "Sionna RT runs on the CPU through Dr.Jit's LLVM backend, which needs LLVM's shared "
    "library: install it (Debian/Ubuntu: `apt-get install libllvm15`) or point "
    "DRJIT_LIBLLVM_PATH at an existing libLLVM.so. TR 38.901 presets (umi/uma/rma sites) "
    "do not need it."
)
_DIGESTS: dict[tuple, str] = {}


class RayTracerUnavailable(InputError):
    """Sionna RT (Mitsuba / Dr.Jit) could not start on this machine."""


def _scenes_dir() -> Path | None:
    """Directory of the scenes shipped in the ``sionna-rt`` wheel (no import)."""
    try:
        dist = importlib.metadata.distribution("sionna-rt")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(SCENES_SUBDIR)))
    return path if path.is_dir() else None


def builtin_scenes() -> list[str]:
    """Names of the scenes shipped with Sionna RT (``munich``, ``etoile``, ...)."""
    root = _scenes_dir()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.xml").is_file())


def resolve_scene(scene: str, where: str = "scene") -> Path:
    """The XML file of a built-in scene name or of a user path.

    Raises
    ------
    InputError
        If ``scene`` is neither a built-in name nor an existing ``.xml`` file.
    """
    root = _scenes_dir()
    if root is not None and (root / scene / f"{scene}.xml").is_file():
        return root / scene / f"{scene}.xml"
    path = Path(scene).expanduser()
    if path.suffix.lower() == ".xml" and path.is_file():
        return path.resolve()
    if root is None:
        known = f"Sionna RT is not installed (`pip install {SIONNA_RT_REQUIREMENT}`)"
    else:
        known = f"built-in scenes: {', '.join(builtin_scenes())}"
    raise InputError(
        f"{where}={scene!r} is not a built-in Sionna RT scene nor an existing Mitsuba .xml "
        f"file; {known}"
    )


def scene_files(xml: Path) -> list[Path]:
    """The scene XML and every file it references (meshes, textures, includes)."""
    try:
        tree = ET.parse(xml)
    except (OSError, ET.ParseError) as err:
        raise InputError(f"scene file {xml} cannot be parsed as XML: {err}") from err
    files = [xml]
    for element in tree.iter():
        name = element.get("filename") or (
            element.get("value") if element.get("name") == "filename" else None
        )
        if not name:
            continue
        path = Path(os.path.normpath(xml.parent / name))  # no symlink walk: 2,368 files
        if not path.is_file():
            raise InputError(f"scene {xml} references {name!r}, which does not exist at {path}")
        files.extend(scene_files(path) if path.suffix.lower() == ".xml" else [path])
    return files


def scene_digest(xml: Path) -> str:
    """sha256 over the scene XML and its referenced files (names relative to the XML).

    Remembered per process for unchanged files (same paths, sizes and mtimes): Munich's
    2,368 files take ~0.7 s to hash, their ``stat`` a few milliseconds.
    """
    files = sorted(set(scene_files(xml)))
    stats = [(str(p), p.stat()) for p in files]
    stamp = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    if stamp in _DIGESTS:
        return _DIGESTS[stamp]
    digest = hashlib.sha256()
    for path in files:
        try:
            relative = path.relative_to(xml.parent)
        except ValueError:
            relative = path
        digest.update(f"{relative.as_posix()}\0{sha256_file(path)}\n".encode())
    _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def start_ray_tracer():
    """Import Sionna RT on Dr.Jit's LLVM (CPU) variant and check that it runs.

    Returns
    -------
    module
        ``sionna.rt``.

    Raises
    ------
    RayTracerUnavailable
        If Sionna RT is not installed or Dr.Jit's LLVM backend cannot start.
    """
    try:
        import drjit as dr
        import mitsuba as mi
    except ImportError as err:
        raise RayTracerUnavailable(
            f"ray-traced sites need Sionna RT, which is not importable ({err}): "
            f"`pip install {SIONNA_RT_REQUIREMENT}`"
        ) from err
    try:
        if mi.variant() != RT_VARIANT:
            mi.set_variant(RT_VARIANT)
        import sionna.rt as rt

        probe = dr.sum(mi.Float([1.0, 2.0]))  # compiles and runs one tiny kernel
        dr.eval(probe)
    except (ImportError, RuntimeError) as err:
        raise RayTracerUnavailable(f"the ray tracer cannot start ({err}). {LLVM_FIX}") from err
    return rt


@contextmanager
def deterministic_jit() -> Iterator[None]:
    """Run Dr.Jit's LLVM kernels on one thread inside the block.

    On its thread pool the path solver's results depend on thread timing: with the same
    seeds, a few of 256 receivers got a different path set from run to run (checked
    here, Sionna RT 2.0.1); on one thread the same seed gives the same bytes.
    """
    import drjit as dr

    previous = dr.thread_count()
    dr.set_thread_count(1)
    try:
        yield
    finally:
        dr.set_thread_count(previous)


def load_scene(xml: Path, frequency_hz: float):
    """Load a scene (shapes merged per material) at a carrier frequency."""
    rt = start_ray_tracer()
    try:
        scene = rt.load_scene(str(xml), merge_shapes=True)
    except RuntimeError as err:
        raise InputError(f"Sionna RT cannot load scene {xml}: {err}") from err
    scene.frequency = frequency_hz
    return scene


def _rays(origins: np.ndarray, directions: np.ndarray, max_t: np.ndarray | None = None):
    import mitsuba as mi

    o = mi.Point3f(*(np.ascontiguousarray(origins[:, k], dtype=np.float32) for k in range(3)))
    d = mi.Vector3f(*(np.ascontiguousarray(directions[:, k], dtype=np.float32) for k in range(3)))
    ray = mi.Ray3f(o, d)
    if max_t is not None:
        ray.maxt = mi.Float(np.ascontiguousarray(max_t, dtype=np.float32))
    return ray


def height_above(scene, points: np.ndarray) -> np.ndarray:
    """Height of the first surface straight above each point.

    Parameters
    ----------
    scene : a loaded ``sionna.rt.Scene``.
    points : ``[N, 3]`` positions, metres.

    Returns
    -------
    np.ndarray
        ``[N]`` float64: z of the first surface hit by a vertical ray upwards, NaN where
        the sky is open (a point with a roof above it is indoors or under a structure).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    up = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    hit = scene.mi_scene.ray_intersect(_rays(points, up))
    valid = np.array(hit.is_valid(), dtype=bool)
    return np.where(valid, np.array(hit.p.z, dtype=np.float64), np.nan)


def segment_clear(scene, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Whether the straight segments ``start -> end`` cross no surface of the scene.

    Parameters
    ----------
    scene : a loaded ``sionna.rt.Scene``.
    start, end : ``[N, 3]`` or ``[3]`` end points, metres (broadcast against each other).

    Returns
    -------
    np.ndarray
        ``[N]`` bool, True where the segment is unobstructed (Mitsuba ``ray_test``).
    """
    start, end = np.broadcast_arrays(
        np.asarray(start, dtype=np.float64).reshape(-1, 3),
        np.asarray(end, dtype=np.float64).reshape(-1, 3),
    )
    delta = end - start
    length = np.linalg.norm(delta, axis=1)
    direction = delta / np.maximum(length, 1e-12)[:, None]
    blocked = scene.mi_scene.ray_test(_rays(start, direction, length * (1.0 - 1e-5)))
    return ~np.array(blocked, dtype=bool)
