"""User drops for ray-traced sites: positions in the site's area that receive paths.

A Sionna RT radio map (``RadioMapSolver``) over the bounding box of the site's
``ue_area``, on the plane ``z = ue_height_m``, tells which cells the BS reaches;
``RadioMap.sample_positions`` draws positions uniformly over the cells whose path
gain is at least :data:`MIN_PATH_GAIN_DB`. Candidates outside the area's polygon or
under a roof (a vertical ray upwards hits the scene: indoors or under a structure)
are rejected; the ray tracer later rejects the few that still receive no path. Every
count is kept in :class:`DropStats` and reported with the site's data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rantune.channels.scenes import height_above
from rantune.config import RtSiteConfig
from rantune.errors import InputError

RADIO_MAP_CELL_M = 2.0
RADIO_MAP_SAMPLES_PER_TX = 10**6
MIN_PATH_GAIN_DB = -130.0
MIN_ACCEPTANCE = 0.02  # lower bound of the acceptance estimate used to size a round


def polygon_contains(polygon: tuple[tuple[float, float], ...], xy: np.ndarray) -> np.ndarray:
    """Which points ``xy`` ``[N, 2]`` lie inside (or on the boundary of) ``polygon``.

    Returns
    -------
    np.ndarray
        ``[N]`` bool.
    """
    from matplotlib.path import Path as PolygonPath

    # A tiny positive radius includes the boundary whatever the vertex order.
    path = PolygonPath(np.asarray(polygon, dtype=np.float64))
    sign = 1.0 if _signed_area(polygon) > 0 else -1.0
    return path.contains_points(np.asarray(xy, dtype=np.float64).reshape(-1, 2), radius=1e-9 * sign)


def _signed_area(polygon: tuple[tuple[float, float], ...]) -> float:
    pts = np.asarray(polygon, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


@dataclass
class DropStats:
    """How many candidate positions each stage kept (one site)."""

    radio_map_cells: int = 0
    covered_cells: int = 0
    candidates: int = 0
    outside_area: int = 0
    under_roof: int = 0
    traced: int = 0
    no_path: int = 0
    accepted: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class UeDropper:
    """Draws covered, outdoor candidate positions in one site's UE area.

    Parameters
    ----------
    scene : the site's loaded ``sionna.rt.Scene`` with its BS transmitter added.
    site : the ray-traced site.

    Raises
    ------
    InputError
        If no cell of the area receives any path (the area is out of the BS's reach).
    """

    def __init__(self, scene, site: RtSiteConfig) -> None:
        import mitsuba as mi
        from sionna.rt import RadioMapSolver

        self.scene = scene
        self.site = site
        self.stats = DropStats()
        self._round = 0
        corners = np.asarray(site.ue_area, dtype=np.float64)
        low, high = corners.min(axis=0), corners.max(axis=0)
        size = np.maximum(high - low, RADIO_MAP_CELL_M)
        center = 0.5 * (low + high)
        self.radio_map = RadioMapSolver()(
            scene,
            center=mi.Point3f(float(center[0]), float(center[1]), float(site.ue_height_m)),
            orientation=mi.Point3f(0.0, 0.0, 0.0),
            size=mi.Point2f(float(size[0]), float(size[1])),
            cell_size=mi.Point2f(RADIO_MAP_CELL_M, RADIO_MAP_CELL_M),
            samples_per_tx=RADIO_MAP_SAMPLES_PER_TX,
            max_depth=site.max_depth,
            seed=int(site.seed % (2**31)),
        )
        gain = np.asarray(self.radio_map.path_gain.numpy())[0]  # [cells_y, cells_x]
        centers = np.asarray(self.radio_map.cell_centers.numpy()).reshape(-1, 3)
        with np.errstate(divide="ignore"):
            covered = 10.0 * np.log10(gain.reshape(-1)) >= MIN_PATH_GAIN_DB
        inside = polygon_contains(site.ue_area, centers[:, :2])
        self.stats.radio_map_cells = int(inside.sum())
        self.stats.covered_cells = int((covered & inside).sum())
        if self.stats.covered_cells == 0:
            raise InputError(
                f"{site.name}.ue_area receives no path from the BS at {site.bs_position_m} "
                f"(radio map, max_depth {site.max_depth}: 0 of {self.stats.radio_map_cells} "
                f"cells of {RADIO_MAP_CELL_M:g} m reach {MIN_PATH_GAIN_DB:g} dB path gain); "
                "move the area into the BS's coverage, the BS nearer to it, or raise max_depth"
            )

    def draw(self, needed: int) -> np.ndarray:
        """About ``needed`` candidates that are inside the area and under open sky.

        Returns
        -------
        np.ndarray
            ``[M, 3]`` float64 positions, metres (``M`` may be 0 in an unlucky round).
        """
        accepted = self.stats.candidates - self.stats.outside_area - self.stats.under_roof
        rate = accepted / self.stats.candidates if self.stats.candidates else 1.0
        count = int(np.ceil(needed / max(rate, MIN_ACCEPTANCE))) + 8
        seed = (self.site.seed * 1_000_003 + self._round) % (2**31 - 1)
        self._round += 1
        positions, _ = self.radio_map.sample_positions(
            num_pos=count, metric="path_gain", min_val_db=MIN_PATH_GAIN_DB, seed=int(seed)
        )
        positions = np.asarray(positions.numpy(), dtype=np.float64)[0]  # [count, 3]
        self.stats.candidates += len(positions)
        inside = polygon_contains(self.site.ue_area, positions[:, :2])
        self.stats.outside_area += int((~inside).sum())
        positions = positions[inside]
        outdoor = np.isnan(height_above(self.scene, positions))
        self.stats.under_roof += int((~outdoor).sum())
        return positions[outdoor]
