"""Worker processes that run the ClientApp for the in-process engine: clients on every core.

A :class:`WorkerPool` starts ``workers`` processes; each loads the ClientApp once
and, like a Ray actor, keeps its process's jobs (:data:`rantune.client.jobs.JOBS`:
a base station's model and rows) between rounds. The parent hands out one message at a time to whichever worker is
free (a worker takes a message of a node it served before first, so a node's job
stays where it was built), and sends the node's ``Context`` parts with it: its
``node_config`` and its ``state`` travel both ways, so any worker can serve any node
and the result is the same as on the sequential path (each reply depends only on
the message, the node's state and its own data; a test checks equal histories).

Workers are forked from this process when it runs a single Python thread (they
start in milliseconds with everything imported; each sets torch to one intra-op
thread before computing, as torch's own DataLoader workers do), else spawned (a
fresh interpreter that imports the ClientApp: seconds).

Each call's seconds are measured in the worker, so a reply that took longer than
the round timeout is dropped exactly as on the sequential path. A ClientApp that
raises gives an error reply; a worker that dies (killed, out of memory) gives an
error reply for its message and is replaced.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from rantune.errors import InputError
from rantune.simulations.engine.identity import server_identity

DEFAULT_APP = "rantune.client.app:app"


@dataclass
class Delivery:
    """One message for one node: what a worker needs to run the ClientApp."""

    node_id: int
    node_config: dict
    state: RecordDict
    message: Message


@dataclass
class Outcome:
    """A worker's answer: the reply, the node's state after the call, the call's seconds."""

    reply: Message
    state: RecordDict
    seconds: float


def error_reply(message: Message, code: int, reason: str) -> Message:
    """The reply Flower's runtimes give when a ClientApp fails."""
    return Message(Error(code=code, reason=reason), reply_to=message)


def call_client(client_app, message: Message, context: Context) -> Message:
    """``client_app(message, context)``; an exception becomes an error reply (as in
    Flower's simulation runtime), anything else that is not a Message too."""
    try:
        reply = client_app(message, context)
        if not isinstance(reply, Message):
            raise TypeError(f"ClientApp returned {type(reply).__name__}, not a Message")
    except Exception as err:  # noqa: BLE001 - reported to the server like Flower does
        reason = f"{type(err)}:<'{err}'>"
        reply = error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
    return reply


def _load_app(app: str | bytes):
    if isinstance(app, bytes):
        return pickle.loads(app)
    module, _, attr = app.partition(":")
    return getattr(importlib.import_module(module), attr)


def _worker_main(conn: Connection, app: str | bytes, run_config: dict, run_id: int) -> None:
    """A worker's loop: receive a :class:`Delivery`, run the ClientApp, send an
    :class:`Outcome`; ``None`` ends it."""
    import torch

    torch.set_num_threads(1)  # before any computation here (a forked worker included)
    from rantune.simulations.quiet import quiet_third_party

    quiet_third_party()  # RANTUNE_VERBOSE, inherited from the CLI, shows the import noise
    client_app = _load_app(app)
    with server_identity(run_id):  # the same message identity as the sequential path
        while True:
            try:
                item = conn.recv()
            except EOFError:
                return
            if item is None:
                return
            context = Context(
                run_id=run_id,
                node_id=item.node_id,
                node_config=item.node_config,
                state=item.state,
                run_config=run_config,
            )
            start = time.monotonic()
            reply = call_client(client_app, item.message, context)
            conn.send(Outcome(reply, context.state, time.monotonic() - start))


def start_method() -> str:
    """``fork`` where it exists and this process runs one thread (a fork of a
    multi-threaded process can deadlock), else ``spawn``."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def app_reference(client_app: Callable | None) -> str | bytes:
    """What a worker loads: the shipped ClientApp by name, or a picklable callable."""
    if client_app is None:
        return DEFAULT_APP
    try:
        return pickle.dumps(client_app)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise InputError(
            f"client_app {client_app!r} cannot be sent to worker processes ({err}): pass a "
            "module-level callable, or run with workers=1"
        ) from err


class WorkerPool:
    """``workers`` ClientApp processes of one run (see the module docstring).

    Parameters
    ----------
    workers : processes to start (>= 1).
    run_config : the flat run config every node's context carries.
    client_app : ``None`` for the shipped ClientApp, else a picklable callable.
    run_id : the run id of every context.
    """

    def __init__(
        self,
        workers: int,
        run_config: dict,
        client_app: Callable | None = None,
        run_id: int = 1,
    ) -> None:
        if workers < 1:
            raise InputError(f"workers={workers} is invalid: expected >= 1")
        self._args = (app_reference(client_app), dict(run_config), run_id)
        self._mp = multiprocessing.get_context(start_method())
        self._workers: list[tuple[multiprocessing.Process, Connection]] = []
        self._home: dict[int, int] = {}  # node id -> worker that served it last
        for _ in range(workers):
            self._workers.append(self._start())

    def _start(self) -> tuple[multiprocessing.Process, Connection]:
        parent, child = self._mp.Pipe()
        process = self._mp.Process(target=_worker_main, args=(child, *self._args), daemon=True)
        process.start()
        child.close()
        return process, parent

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._workers]

    def _pick(self, pending: list[int], deliveries: Sequence[Delivery], worker: int) -> int:
        """Index into ``pending`` of the next delivery for ``worker``: one of its own
        nodes, else a node no worker has served, else the first one left."""
        for position, i in enumerate(pending):
            if self._home.get(deliveries[i].node_id) == worker:
                return position
        for position, i in enumerate(pending):
            if deliveries[i].node_id not in self._home:
                return position
        return 0

    def run(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Run every delivery on the workers; outcomes in the order of ``deliveries``."""
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        pending = list(range(len(deliveries)))
        busy: dict[int, int] = {}  # worker -> delivery index
        while pending or busy:
            for worker in range(self.size):
                if worker not in busy and pending:
                    i = pending.pop(self._pick(pending, deliveries, worker))
                    self._workers[worker][1].send(deliveries[i])
                    self._home[deliveries[i].node_id] = worker
                    busy[worker] = i
            by_conn = {self._workers[w][1]: w for w in busy}
            for conn in wait(list(by_conn)):
                worker = by_conn[conn]
                i = busy.pop(worker)
                try:
                    outcomes[i] = conn.recv()
                except (EOFError, OSError):
                    outcomes[i] = self._lost(worker, deliveries[i])
        return outcomes  # type: ignore[return-value]

    def _lost(self, worker: int, delivery: Delivery) -> Outcome:
        """A worker died during ``delivery``: an error reply, and a fresh worker."""
        process, conn = self._workers[worker]
        process.join(timeout=5)
        code = process.exitcode
        conn.close()
        self._workers[worker] = self._start()
        self._home = {n: w for n, w in self._home.items() if w != worker}
        reason = f"worker process {process.pid} died (exit code {code}) while running the ClientApp"
        reply = error_reply(delivery.message, ErrorCode.CLIENT_APP_CRASHED, reason)
        return Outcome(reply, delivery.state, 0.0)

    def close(self) -> None:
        """Stop every worker (asks first, then terminates those that do not exit)."""
        for _, conn in self._workers:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for process, conn in self._workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            conn.close()
        self._workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
