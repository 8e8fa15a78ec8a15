"""The record of a launched federation: ``DIR/federation.json``.

It is rewritten (atomically) after every process start, so that ``down`` can
stop whatever was started even if ``up`` was interrupted half-way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rantune.errors import InputError
from rantune.simulations.federation import processes
from rantune.simulations.federation.files import atomic_write

STATE_FILE = "federation.json"


@dataclass
class Federation:
    """A launched federation, as recorded in ``DIR/federation.json``."""

    out_dir: Path
    name: str
    address: str
    flwr_home: Path
    ca_cert: str | None
    auth: bool
    processes: list[processes.ProcessRecord] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)

    def save(self) -> None:
        """Write the state atomically (called after every started process)."""
        data = {
            "name": self.name,
            "address": self.address,
            "flwr_home": str(self.flwr_home),
            "ca_cert": self.ca_cert,
            "auth": self.auth,
            "processes": [p.to_json() for p in self.processes],
            "nodes": self.nodes,
        }
        atomic_write(self.out_dir / STATE_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, out_dir: Path) -> Federation:
        """Read ``out_dir/federation.json``; ValueError if absent or unreadable."""
        path = Path(out_dir) / STATE_FILE
        if not path.is_file():
            raise InputError(
                f"no federation recorded in {out_dir} ({STATE_FILE} is missing); pass the --out "
                "directory given to `rantune federation up`"
            )
        try:
            data = json.loads(path.read_text())
            return cls(
                out_dir=Path(out_dir),
                name=data["name"],
                address=data["address"],
                flwr_home=Path(data["flwr_home"]),
                ca_cert=data["ca_cert"],
                auth=bool(data["auth"]),
                processes=[processes.ProcessRecord.from_json(p) for p in data["processes"]],
                nodes=list(data["nodes"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"{path} is corrupt ({err!r}); stop leftover processes by hand (see logs/) "
                "and delete it"
            ) from err

    def running(self) -> list[processes.ProcessRecord]:
        """Return the recorded processes that are still alive (and still ours)."""
        return [p for p in self.processes if processes.matches(p)]
