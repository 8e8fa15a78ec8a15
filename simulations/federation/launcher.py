"""A local Flower federation on loopback: one SuperLink and N SuperNodes (base stations).

``up`` starts ``flower-superlink`` and N ``flower-supernode`` processes, each
SuperNode with ``--node-config "partition-id=i num-partitions=N"`` (plus
``data-preset``), optionally with TLS (generated CA) and SuperNode
authentication (generated, registered keys). With a preset, it first lays out one
station data set per SuperNode, ``DIR/data/bs-i`` (station ``i`` of the preset and
nothing else: :func:`rantune.channels.sources.export_station`), passes it as the
node's ``data-path``, and gives each such node a private, empty channel cache
(``RANTUNE_CACHE=DIR/node-cache/bs-i``), as if it ran on its own host. It records every process in
``DIR/federation.json`` as soon as it starts, logs each to ``DIR/logs/NAME.log``
and writes a ``[superlink.NAME]`` connection to ``$FLWR_HOME/config.toml`` so
that ``flwr run . NAME`` reaches it. ``down`` stops exactly those processes.
If ``up`` fails half-way, it stops what it started before raising.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rantune.errors import InputError
from rantune.simulations.federation import auth, connection, processes, tls
from rantune.simulations.federation.node_config import (
    DATA_PATH,
    PARTITION_ID,
    build_node_config,
    check_partitions,
    check_preset_name,
)
from rantune.simulations.federation.state import STATE_FILE, Federation

DEFAULT_NAME = "rantune-local"
MAX_NODES = 64


@dataclass(frozen=True)
class LaunchConfig:
    """What ``up`` starts.

    Attributes
    ----------
    out_dir : Path
        Directory for ``federation.json``, ``logs/``, ``tls/`` and ``keys/``.
    num_nodes : int
        Number of SuperNodes (base stations), 1..64.
    use_tls : bool
        Serve the SuperLink over TLS (a CA and certificate are generated unless
        ``tls_files`` is given).
    use_auth : bool
        Enable SuperNode authentication (needs TLS): one key pair per node,
        registered before the node starts.
    preset : str, optional
        Data preset (name or .toml path) sent to every SuperNode as ``data-preset``;
        with ``station_data`` each node gets its station of it as ``data-path``.
    station_data : bool
        With a preset: lay out ``DIR/data/bs-i`` (one station each; one SuperNode per
        station, the natural split) and pass them as ``data-path``. Off: every node
        reads the shared channel cache (synthetic partitions, a simulation rehearsal).
    data_seed : int
        The run's ``data.seed`` (the laid-out stations are generated with it).
    name : str
        Connection name written to ``$FLWR_HOME/config.toml``.
    superlink_port : int, optional
        SuperLink port (Control, Fleet and Runtime APIs); a free one if omitted.
    node_ports : tuple of int, optional
        Each SuperNode's Runtime API port; free ones if omitted.
    node_configs : tuple of str, optional
        Explicit ``--node-config`` strings (one per node) instead of the
        generated ones; each must name its partition.
    tls_files : tls.TlsFiles, optional
        Existing CA/server certificate/key to use instead of generating them.
    tls_hosts : tuple of str
        Extra SAN host names for a generated server certificate.
    flwr_home : Path, optional
        Flower CLI home (default ``$FLWR_HOME`` or ``~/.flwr``).
    host : str
        Loopback address to bind and connect to.
    wait_nodes : bool
        Wait until every SuperNode is online at the SuperLink.
    timeout_s : float
        Upper bound for the SuperLink to listen and for the nodes to come online.
    """

    out_dir: Path
    num_nodes: int
    use_tls: bool = False
    use_auth: bool = False
    preset: str | None = None
    station_data: bool = True
    data_seed: int = 0
    name: str = DEFAULT_NAME
    superlink_port: int | None = None
    node_ports: tuple[int, ...] | None = None
    node_configs: tuple[str, ...] | None = None
    tls_files: tls.TlsFiles | None = None
    tls_hosts: tuple[str, ...] = ()
    flwr_home: Path | None = None
    host: str = "127.0.0.1"
    wait_nodes: bool = True
    timeout_s: float = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise ValueError with a hint if ``host:port`` cannot be bound."""
    if not 1 <= port <= 65535:
        raise InputError(f"{what} port {port} is out of range; use 1..65535 or omit it")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port left in TIME_WAIT is usable, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise InputError(
                f"{what} port {port} on {host} is already in use ({err.strerror}); pass another "
                "port, or omit it to pick a free one"
            ) from err


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _executable(bin_dir: Path, name: str) -> str:
    candidate = bin_dir / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise InputError(
            f"{name!r} not found next to {sys.executable} or on PATH; install "
            "'flwr[simulation]==1.41.0' in this environment"
        )
    return found


def _validate(cfg: LaunchConfig) -> list[str]:
    """Check the launch request and return the node-config strings."""
    if not 1 <= cfg.num_nodes <= MAX_NODES:
        raise InputError(f"--nodes must be in 1..{MAX_NODES}, got {cfg.num_nodes}")
    if cfg.use_auth and not cfg.use_tls:
        raise InputError(
            "--auth needs --tls: Flower authenticates SuperNodes only over TLS; add --tls"
        )
    if cfg.tls_files is not None and not cfg.use_tls:
        raise InputError("TLS files were given without --tls; add --tls or drop the files")
    try:
        loopback = ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or ipaddress.ip_address(cfg.host).version != 4:
        raise InputError(
            f"host {cfg.host!r} is not an IPv4 loopback address; the local launcher binds "
            "127.0.0.1 only (see the multi-host guide for separate machines)"
        )
    connection.check_connection_name(cfg.name)
    if cfg.node_configs is not None:
        configs = list(cfg.node_configs)
        if len(configs) != cfg.num_nodes:
            raise InputError(
                f"{len(configs)} node-configs for {cfg.num_nodes} SuperNodes; give one per node"
            )
    else:
        dirs = station_dirs(cfg, Path(cfg.out_dir).resolve())
        configs = [
            build_node_config(i, cfg.num_nodes, cfg.preset, None if dirs is None else str(dirs[i]))
            for i in range(cfg.num_nodes)
        ]
    parsed = check_partitions(configs)
    if cfg.node_configs is not None:
        _check_data_paths(cfg, parsed)
    if cfg.node_ports is not None and len(cfg.node_ports) != cfg.num_nodes:
        raise InputError(f"{len(cfg.node_ports)} node ports for {cfg.num_nodes} SuperNodes")
    return configs


def _station_preset(cfg: LaunchConfig):
    from rantune.presets import load_preset

    return load_preset(cfg.preset).with_seed(cfg.data_seed)


def station_dirs(cfg: LaunchConfig, out_dir: Path) -> list[Path] | None:
    """Where ``up`` lays out each node's station data set (``None``: it does not).

    Raises
    ------
    InputError
        If the preset's station count differs from ``--nodes`` (one SuperNode per
        station), or the preset is unknown.
    """
    if cfg.preset is None or not cfg.station_data:
        return None
    check_preset_name(cfg.preset)
    stations = len(_station_preset(cfg).sites)
    if stations != cfg.num_nodes:
        raise InputError(
            f"--nodes {cfg.num_nodes} but preset {cfg.preset!r} has {stations} base stations: "
            f"station data needs one SuperNode per station (--nodes {stations}); or pass "
            "--no-station-data to let every node read the shared channel cache (synthetic "
            "partitions, a simulation-style rehearsal)"
        )
    return [out_dir / "data" / f"bs-{i}" for i in range(cfg.num_nodes)]


def _check_data_paths(cfg: LaunchConfig, parsed: list[dict]) -> None:
    """Explicit node-configs: every ``data-path`` is a station data set, and with a
    preset the node's own station of it."""
    from rantune.channels.sources import NodeStations
    from rantune.channels.station import open_station

    preset = _station_preset(cfg) if cfg.preset is not None else None
    for values in parsed:
        if DATA_PATH not in values:
            continue
        where = f"node-config partition-id={values[PARTITION_ID]}"
        if preset is None:
            if not Path(values[DATA_PATH]).expanduser().is_dir():
                raise InputError(f"{where}: data-path {values[DATA_PATH]!r} does not exist")
            open_station(Path(values[DATA_PATH]).expanduser())  # a station data set
        else:
            NodeStations(preset, values[PARTITION_ID], values[DATA_PATH])


def _lay_out_station_data(cfg: LaunchConfig, out_dir: Path) -> list[Path] | None:
    """Write each node's station directory (station i of the preset only)."""
    from rantune.channels.sources import export_station

    dirs = station_dirs(cfg, out_dir)
    if dirs is not None:
        preset = _station_preset(cfg)
        for i, directory in enumerate(dirs):
            export_station(preset, i, directory)
    return dirs


def _ports(cfg: LaunchConfig) -> tuple[int, list[int]]:
    """Check given ports, pick free ones for the rest; all distinct."""
    if cfg.superlink_port is not None:
        check_port_free(cfg.host, cfg.superlink_port, "SuperLink")
    if cfg.node_ports is not None:
        for port in cfg.node_ports:
            check_port_free(cfg.host, port, "SuperNode")
    taken: set[int] = set()

    def pick(given: int | None) -> int:
        if given is not None and given in taken:
            raise InputError(f"port {given} is given twice; every process needs its own port")
        port = given
        while port is None or port in taken:
            port = free_port(cfg.host)
        taken.add(port)
        return port

    link = pick(cfg.superlink_port)
    nodes = [pick(cfg.node_ports[i] if cfg.node_ports else None) for i in range(cfg.num_nodes)]
    return link, nodes


def _fail_with_log(record: processes.ProcessRecord, what: str) -> None:
    tail = processes.log_tail(record.log)
    if "address already in use" in tail.lower() or "errno 98" in tail.lower():
        raise InputError(
            f"{what} could not bind its port (address already in use); pass another port or "
            f"omit it to pick a free one. Log {record.log}:\n{tail}"
        )
    raise RuntimeError(f"{what} exited during start-up. Last lines of {record.log}:\n{tail}")


def _wait_listening(record: processes.ProcessRecord, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.is_running(record.pid):
            _fail_with_log(record, "SuperLink")
        if _port_open(host, port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"SuperLink did not listen on {host}:{port} within {timeout:.0f} s")


def _wait_online(fed: Federation, nodes: list[processes.ProcessRecord], timeout: float) -> None:
    """Wait until every SuperNode is online at the SuperLink.

    Cheap first: each SuperNode logs ``SuperNode ID: ...`` once the SuperLink
    activated it (a refused node exits instead). Then the Control API
    (``flwr supernode list``, ~1 s per call) confirms that all are online.
    """
    flwr_bin = _executable(Path(sys.executable).parent, "flwr")
    deadline = time.monotonic() + timeout
    online: list[str] = []
    while time.monotonic() < deadline:
        activated = 0
        for record in nodes:
            tail = processes.log_tail(record.log, lines=200)
            if not processes.is_running(record.pid):
                hint = ""
                if "Failed to activate SuperNode" in tail:
                    hint = " (the SuperLink refused it: is its public key registered?)"
                raise RuntimeError(
                    f"SuperNode {record.name} exited{hint}. Last lines of {record.log}:\n"
                    + "\n".join(tail.splitlines()[-15:])
                )
            activated += "SuperNode ID:" in tail
        if activated == len(nodes):
            listed = auth.list_nodes(fed.name, fed.flwr_home, flwr_bin=flwr_bin)
            online = [str(n["node-id"]) for n in listed if n.get("status") == "online"]
            if len(online) >= len(nodes):
                return
        time.sleep(0.3)
    raise RuntimeError(
        f"only {len(online)} of {len(nodes)} SuperNodes came online within {timeout:.0f} s; "
        f"see the logs in {fed.out_dir / 'logs'}"
    )


def _register_all(keys: list, name: str, home: Path, flwr_bin: str) -> list[int]:
    """Register every node's public key (in parallel: each ``flwr`` call takes ~1 s)."""
    with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
        futures = [
            pool.submit(auth.register_node, k.public_key, name, home, flwr_bin, k.name)
            for k in keys
        ]
        return [f.result() for f in futures]


def check(cfg: LaunchConfig) -> None:
    """Validate a launch request (ports aside) without writing or starting anything."""
    _validate(cfg)


def up(cfg: LaunchConfig) -> Federation:
    """Start the SuperLink and the SuperNodes; return the recorded federation.

    Raises
    ------
    ValueError
        Bad input (ports in use, certificate paths, node-configs, --auth without --tls,
        a federation already running in ``out_dir``).
    RuntimeError
        A process failed to start or a SuperNode did not come online. In every
        failure case the processes started so far are stopped first.
    """
    configs = _validate(cfg)
    parsed_configs = check_partitions(configs)
    out_dir = Path(cfg.out_dir).resolve()
    if (out_dir / STATE_FILE).is_file():
        previous = Federation.load(out_dir)
        if previous.running():
            raise InputError(
                f"a federation started from {out_dir} is still running (pids "
                f"{[p.pid for p in previous.running()]}); run `rantune federation down --out "
                f"{out_dir}` first"
            )
    tls_files = cfg.tls_files
    if tls_files is not None:  # re-check user files: they must exist and fit together
        tls_files = tls.load_tls_files(
            tls_files.ca_cert, tls_files.server_cert, tls_files.server_key
        )
    link_port, node_ports = _ports(cfg)
    bin_dir = Path(sys.executable).parent
    superlink_bin = _executable(bin_dir, "flower-superlink")
    supernode_bin = _executable(bin_dir, "flower-supernode")
    home = connection.flwr_home(cfg.flwr_home)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.use_tls and tls_files is None:
        tls_files = tls.generate_tls(out_dir / "tls", extra_hosts=cfg.tls_hosts)
    _lay_out_station_data(cfg, out_dir)

    address = f"{cfg.host}:{link_port}"
    env = {
        **os.environ,
        "PATH": f"{Path(superlink_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    fed = Federation(
        out_dir=out_dir,
        name=cfg.name,
        address=address,
        flwr_home=home,
        ca_cert=str(tls_files.ca_cert) if tls_files else None,
        auth=cfg.use_auth,
    )
    link_argv = [superlink_bin, "--host", cfg.host, "--port", str(link_port)]
    link_argv += tls_files.superlink_args() if tls_files else ["--insecure"]
    link_argv += ["--enable-supernode-auth"] if cfg.use_auth else []
    # The ServerApp runs in this environment; never `uv sync` app dependencies at run time.
    link_argv += ["--disable-runtime-dependency-installation"]
    try:
        record = processes.start_process(
            "superlink", link_argv, out_dir / "logs/superlink.log", env
        )
        fed.processes.append(record)
        fed.save()
        _wait_listening(record, cfg.host, link_port, cfg.timeout_s)
        connection.write_connection(
            home, cfg.name, address, tls_files.ca_cert if tls_files else None
        )

        names = [f"bs-{i}" for i in range(cfg.num_nodes)]
        keys: list[auth.NodeKeys | None] = [None] * cfg.num_nodes
        if cfg.use_auth:
            keys = [auth.generate_node_keys(out_dir / "keys", name) for name in names]
            node_ids = _register_all(keys, cfg.name, home, _executable(bin_dir, "flwr"))
        node_records = []
        for i, name in enumerate(names):
            node: dict = {"name": name, "node_config": configs[i], "port": node_ports[i]}
            node_env = env
            if DATA_PATH in parsed_configs[i]:  # its own station only: a private, empty cache
                node["data_path"] = parsed_configs[i][DATA_PATH]
                node["cache"] = str(out_dir / "node-cache" / name)
                node_env = {**env, "RANTUNE_CACHE": node["cache"]}
            argv = [supernode_bin, "--superlink", address, "--host", cfg.host]
            argv += ["--port", str(node_ports[i])]
            argv += ["--root-certificates", str(tls_files.ca_cert)] if tls_files else ["--insecure"]
            if keys[i] is not None:
                node.update(node_id=node_ids[i], private_key=str(keys[i].private_key))
                argv += ["--auth-supernode-private-key", str(keys[i].private_key)]
            argv += ["--node-config", configs[i]]
            record = processes.start_process(name, argv, out_dir / f"logs/{name}.log", node_env)
            fed.processes.append(record)
            fed.nodes.append(node)
            fed.save()
            node_records.append(record)
        if cfg.wait_nodes:
            _wait_online(fed, node_records, cfg.timeout_s)
    except BaseException:
        _stop_all(fed)
        raise
    return fed


def _stop_all(fed: Federation) -> dict[str, str]:
    outcome = processes.stop_processes(fed.processes)
    connection.remove_connection(fed.flwr_home, fed.name, fed.address)
    return outcome


def down(out_dir: Path) -> dict[str, str]:
    """Stop exactly the processes ``up`` recorded in ``out_dir``; idempotent.

    Returns
    -------
    dict
        Process name -> ``"stopped"``, ``"not running"`` or ``"pid reused (left alone)"``.
    """
    return _stop_all(Federation.load(Path(out_dir).resolve()))


def status(out_dir: Path) -> dict[str, str]:
    """Return process name -> ``"running"`` / ``"not running"`` for a recorded federation."""
    fed = Federation.load(Path(out_dir).resolve())
    return {p.name: "running" if processes.matches(p) else "not running" for p in fed.processes}
