"""WORKERS > 1: several worker processes behind one port, to use more than one core.

The supervisor (this process) starts the embedded database and applies migrations
once, before any worker exists. Each worker is a full picolytics server with its own
queue and writer; every worker binds its own socket to the public port with
SO_REUSEPORT, so the kernel spreads connections evenly (with one shared socket, one
worker tends to take every keep-alive connection). Sessions stay correct across
workers because their assignment is race-free in PostgreSQL. The supervisor serves
the admin listener itself, with metrics merged from every worker, restarts a worker
that dies, and on SIGTERM/SIGINT passes the signal on and waits for every worker to
drain its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

from picolytics.config import Config
from picolytics.errors import first_line
from picolytics.serve.admin import create_admin_app, readiness_reason
from picolytics.serve.app import create_app
from picolytics.serve.limits import ServerLimits
from picolytics.serve.metrics import enable_multiprocess, exposition_registry
from picolytics.serve.server import (
    GRACEFUL_TIMEOUT_S,
    SHUTDOWN_DRAIN_S,
    Bound,
    Listener,
    bind_all,
    bind_socket,
    listen_addr_of,
    public_url,
    run,
    serve_bound,
    stop_on_signals,
)

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
# A worker gets this long after SIGTERM: finish requests, then drain its queue.
WORKER_STOP_TIMEOUT_S = GRACEFUL_TIMEOUT_S + SHUTDOWN_DRAIN_S + 5
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _follow_parent(parent: int) -> None:
    """SIGTERM for this worker when the supervisor dies without stopping it (SIGKILL,
    the OOM killer): the worker then drains its queue and exits, instead of holding the
    port as an orphan. Linux only (prctl); elsewhere nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: Config, conninfo: str, listen_addr: str, parent: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _follow_parent(parent)
    app = create_app(config, conninfo=conninfo)
    run(
        Listener(
            app,
            listen_addr,
            f"worker {os.getpid()}",
            reuse_port=True,
            server=config.server,
            limits=ServerLimits.of(config),
        )
    )


class Supervisor:
    def __init__(self, config: Config, conninfo: str, worker_addr: str) -> None:
        self.config = config
        self.conninfo = conninfo
        self.worker_addr = worker_addr
        self.context = multiprocessing.get_context("fork")
        self.workers: list[BaseProcess] = []
        self.stopping = False

    def _spawn(self) -> BaseProcess:
        worker = self.context.Process(
            target=_worker_main,
            args=(self.config, self.conninfo, self.worker_addr, os.getpid()),
            name="picolytics-worker",
        )
        worker.start()
        log.info("started worker %d", worker.pid)
        return worker

    def start(self) -> None:
        self.workers = [self._spawn() for _ in range(self.config.workers)]

    def replace_dead_workers(self) -> None:
        for index, worker in enumerate(self.workers):
            if worker.is_alive() or self.stopping:
                continue
            log.error(
                "worker %d exited with code %s; starting another", worker.pid, worker.exitcode
            )
            if worker.pid is not None:
                multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
            self.workers[index] = self._spawn()

    async def stop(self) -> bool:
        """SIGTERM every worker and wait for it to drain; True if all exited cleanly."""
        self.stopping = True
        for worker in self.workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        clean = True
        for worker in self.workers:
            await asyncio.to_thread(worker.join, max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.error("worker %d did not stop in time; killing it", worker.pid)
                worker.kill()
                worker.join()
            clean = clean and worker.exitcode == 0
        return clean

    async def readiness(self, registry: CollectorRegistry) -> str | None:
        values = {
            sample.name: sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name in ("picolytics_queue_fill_ratio", "picolytics_database_up")
        }
        if not any(worker.is_alive() for worker in self.workers):
            return "no worker running"
        return await readiness_reason(
            queue_fill=float(values.get("picolytics_queue_fill_ratio", 0.0)),
            database_ok=values.get("picolytics_database_up", 1) == 1,
            conninfo=self.conninfo,
        )


async def _supervise(supervisor: Supervisor, admin: Bound) -> bool:
    stop = asyncio.Event()
    stop_on_signals(stop)
    admin_task = asyncio.create_task(serve_bound(admin, stop)) if admin else None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RESTART_DELAY_S)
        try:
            supervisor.replace_dead_workers()
        except Exception as error:  # e.g. fork refused (EAGAIN): retry, and never skip stop()
            log.error(  # noqa: TRY400 - one line per attempt, not a traceback
                "cannot start a worker, will retry: %s", first_line(error)
            )
    clean = await supervisor.stop()
    if admin_task is not None:
        await admin_task
    log.info("picolytics stopped")
    return clean


def serve_workers(config: Config, conninfo: str) -> bool:
    """Run config.workers workers until SIGTERM/SIGINT; True if all stopped cleanly."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="picolytics-metrics-"))
    enable_multiprocess(metrics_dir)
    try:
        with contextlib.ExitStack() as stack:
            # Bound but not listening: holds the port (and tells ":0" which one it got)
            # without taking a share of the connections.
            reserved = stack.enter_context(
                bind_socket(config.listen_addr, reuse_port=True, listen=False)
            )
            supervisor = Supervisor(config, conninfo, listen_addr_of(reserved, config.listen_addr))
            admin: Bound = []
            if config.admin_listen:
                registry = exposition_registry(None, not config.disable_host_metrics)

                async def readiness() -> str | None:
                    return await supervisor.readiness(registry)

                app = create_admin_app(registry=registry, readiness=readiness, debug=config.debug)
                admin = bind_all(stack, [Listener(app, config.admin_listen, "admin")])
            supervisor.start()
            log.info(
                "picolytics is listening on %s with %d workers",
                public_url(reserved, config.listen_addr),
                config.workers,
            )
            return asyncio.run(_supervise(supervisor, admin))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
