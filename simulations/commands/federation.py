"""``rantune federation up|down|status``: a local SuperLink + SuperNodes on loopback.

Also ``certs`` and ``keygen`` (TLS material and SuperNode keys for separate hosts,
see docs/deployment.md) and the failure drills ``kill-node``, ``restart-node``,
``kill-serverapp`` on a federation started by ``up``.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rantune.errors import InputError
from rantune.simulations.commands import command_group
from rantune.simulations.errors import cli_errors, ensure_output_dir, fail
from rantune.simulations.federation import auth, drills, launcher, tls
from rantune.simulations.federation.connection import flwr_home
from rantune.simulations.federation.tls import TlsFiles

console = Console()
DEFAULT_OUT = Path("runs/federation")


def _tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> TlsFiles | None:
    given = [p for p in (ca, cert, key) if p is not None]
    if not given:
        return None
    if len(given) != 3:
        raise InputError(
            "give all of --tls-ca-cert, --tls-cert and --tls-key, or none of them "
            "(then `--tls` generates a CA and server certificate)"
        )
    return TlsFiles(ca_cert=ca, server_cert=cert, server_key=key)  # type: ignore[arg-type]


def _print_federation(fed: launcher.Federation, states: dict[str, str]) -> None:
    table = Table(title=f"federation {fed.name} at {fed.address} (logs in {fed.out_dir / 'logs'})")
    for column in ("process", "pid", "state", "node-config", "log"):
        table.add_column(column)
    configs = {n["name"]: n["node_config"] for n in fed.nodes}
    for record in fed.processes:
        table.add_row(
            record.name,
            str(record.pid),
            states.get(record.name, "?"),
            configs.get(record.name, ""),
            Path(record.log).name,
        )
    console.print(table)


def _run_hint(fed: launcher.Federation) -> str:
    env = os.environ.get("FLWR_HOME")
    default_home = Path(env).expanduser().resolve() if env else Path.home() / ".flwr"
    prefix = "" if fed.flwr_home == default_home else f"FLWR_HOME={fed.flwr_home} "
    return f"{prefix}flwr run . {fed.name}"


def register(app: typer.Typer) -> None:
    """Add the ``federation`` command group to ``app``."""
    group = command_group(
        app,
        "federation",
        "Start/stop a local Flower federation (SuperLink + SuperNodes) on 127.0.0.1.",
    )

    @group.command("up")
    @cli_errors
    def up(
        nodes: int = typer.Option(2, "--nodes", help="Number of SuperNodes (base stations)."),
        tls: bool = typer.Option(False, "--tls", help="Serve the SuperLink over TLS."),
        auth: bool = typer.Option(
            False, "--auth", help="Admit only registered SuperNodes (needs --tls)."
        ),
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory for state, logs, keys."),
        preset: str | None = typer.Option(
            None,
            "--preset",
            help="Data preset (name or .toml): each SuperNode gets its own station of it "
            "(DIR/data/bs-i, passed as data-path; --nodes = its station count).",
        ),
        station_data: bool = typer.Option(
            True,
            "--station-data/--no-station-data",
            help="With --preset: lay out one station data set per node (off: nodes read "
            "the shared channel cache, for synthetic partitions).",
        ),
        data_seed: int = typer.Option(0, "--data-seed", help="The run's data.seed (with --preset)."),
        name: str = typer.Option(
            launcher.DEFAULT_NAME, "--name", help="Connection name for `flwr run . NAME`."
        ),
        port: int | None = typer.Option(None, "--port", help="SuperLink port (default: free)."),
        node_config: list[str] | None = typer.Option(
            None,
            "--node-config",
            help="Explicit --node-config per SuperNode (repeat once per node).",
        ),
        tls_ca_cert: Path | None = typer.Option(None, help="Existing CA certificate (PEM)."),
        tls_cert: Path | None = typer.Option(None, help="Existing SuperLink certificate (PEM)."),
        tls_key: Path | None = typer.Option(None, help="Existing SuperLink private key (PEM)."),
        tls_host: list[str] | None = typer.Option(
            None, "--tls-host", help="Extra host name for a generated certificate (repeatable)."
        ),
        home: Path | None = typer.Option(
            None, "--flwr-home", help="Flower CLI home (default: $FLWR_HOME or ~/.flwr)."
        ),
        timeout: float = typer.Option(60.0, help="Seconds to wait for the SuperLink and nodes."),
        wait: bool = typer.Option(True, help="Wait until every SuperNode is online."),
    ) -> None:
        """Start a SuperLink and N SuperNodes; print the `flwr run` connection."""
        cfg = launcher.LaunchConfig(
            out_dir=out,
            num_nodes=nodes,
            use_tls=tls,
            use_auth=auth,
            preset=preset,
            station_data=station_data,
            data_seed=data_seed,
            name=name,
            superlink_port=port,
            node_configs=tuple(node_config) if node_config else None,
            tls_files=_tls_files(tls_ca_cert, tls_cert, tls_key),
            tls_hosts=tuple(tls_host or ()),
            flwr_home=home,
            wait_nodes=wait,
            timeout_s=timeout,
        )
        launcher.check(cfg)  # bad input fails here, before anything is written
        ensure_output_dir(out)
        try:
            fed = launcher.up(cfg)
        except RuntimeError as err:
            fail(f"{err}\n(all processes started for this federation were stopped)")
        _print_federation(fed, {p.name: "running" for p in fed.processes})
        security = "TLS" if fed.ca_cert else "plaintext"
        if fed.auth:
            security += " + SuperNode auth"
        console.print(
            f"[green]up[/]: {len(fed.nodes)} SuperNodes connected to {fed.address} ({security}).\n"
            f"connection [bold]{fed.name}[/] in {fed.flwr_home / 'config.toml'}\n"
            f"run:  {_run_hint(fed)}\nstop: rantune federation down --out {out}",
            highlight=False,
        )
        laid_out = [n["data_path"] for n in fed.nodes if "data_path" in n]
        if laid_out:
            console.print(
                f"station data: {len(laid_out)} directories under {Path(laid_out[0]).parent} "
                f"(one station each, the nodes' data-path); run with data.preset={preset!r} "
                f"data.seed={data_seed} and partition.scheme='natural'",
                highlight=False,
            )

    @group.command("down")
    @cli_errors
    def down(
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory given to `up`."),
    ) -> None:
        """Stop exactly the processes `up` started (verified by pid, start time, command)."""
        outcome = launcher.down(out)
        for process, state in outcome.items():
            console.print(f"{process}: {state}", highlight=False)
        console.print("[green]down[/]: no federation process left running", highlight=False)

    @group.command("status")
    @cli_errors
    def status(
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory given to `up`."),
    ) -> None:
        """Show which of the recorded processes are running."""
        fed = launcher.Federation.load(out)
        states = launcher.status(out)
        _print_federation(fed, states)
        running = sum(state == "running" for state in states.values())
        console.print(
            f"{running}/{len(states)} running; connection {fed.name} -> {fed.address} "
            f"({flwr_home(fed.flwr_home) / 'config.toml'})",
            highlight=False,
        )

    @group.command("certs")
    @cli_errors
    def certs(
        out: Path = typer.Option(..., "--out", help="Directory for ca.pem, server.pem, keys."),
        host: list[str] | None = typer.Option(
            None, "--host", help="SuperLink host name or IP as SuperNodes dial it (repeatable)."
        ),
        days: int = typer.Option(365, "--days", help="Validity in days."),
    ) -> None:
        """Generate a CA and a SuperLink certificate (for a SuperLink on another host)."""
        files = tls.generate_tls(
            ensure_output_dir(out), extra_hosts=tuple(host or ()), valid_days=days
        )
        console.print(
            f"CA {files.ca_cert} (give it to every SuperNode and the flwr CLI)\n"
            f"SuperLink: {' '.join(files.superlink_args())}\n"
            f"hosts in the certificate: {', '.join(tls.certificate_hosts(files.server_cert))}\n"
            f"keep {Path(files.ca_cert).with_name(tls.CA_KEY)} offline",
            highlight=False,
        )

    @group.command("keygen")
    @cli_errors
    def keygen(
        out: Path = typer.Option(..., "--out", help="Directory for NAME.key and NAME.pub."),
        name: list[str] = typer.Option(..., "--name", help="Base station name (repeatable)."),
    ) -> None:
        """Generate SuperNode auth key pairs (EC P-384, OpenSSH format)."""
        directory = ensure_output_dir(out)
        for node in name:
            keys = auth.generate_node_keys(directory, node)
            console.print(
                f"{node}: private {keys.private_key} (stays on the base station), "
                f"public {keys.public_key} (flwr supernode register)",
                highlight=False,
            )

    @group.command("kill-node")
    @cli_errors
    def kill_node(
        name: str = typer.Argument(..., help="SuperNode to kill, e.g. bs-1."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory given to `up`."),
    ) -> None:
        """Failure drill: SIGKILL a SuperNode with its SuperExec and ClientApp processes."""
        count = drills.kill_node(out, name)
        console.print(f"{name}: killed ({count} processes); restart with restart-node {name}")

    @group.command("restart-node")
    @cli_errors
    def restart_node(
        name: str = typer.Argument(..., help="SuperNode to start again, e.g. bs-1."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory given to `up`."),
    ) -> None:
        """Failure drill: start a killed SuperNode again (same key and node-config)."""
        fed = drills.restart_node(out, name)
        record = next(p for p in fed.processes if p.name == name)
        console.print(f"{name}: started again (pid {record.pid}, log {record.log})")

    @group.command("kill-serverapp")
    @cli_errors
    def kill_serverapp(
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Directory given to `up`."),
    ) -> None:
        """Failure drill: kill the running ServerApp; `flwr run` with the same out-dir resumes."""
        count = drills.kill_serverapp(out)
        if count == 0:
            fail("no ServerApp process is running in this federation", code=1)
        console.print(f"ServerApp killed ({count} processes); rerun `flwr run` to resume")
