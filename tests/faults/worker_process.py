"""A worker in a process of its own, for the scenario that kills one mid-run (SIGKILL), and for
several worker processes side by side (`WorkerProcesses`: shared pacing, the burst benchmark).

It does what the Functions host does for the queue trigger, with the app's own function:
take a message (invisible for KEYLESS_TEST_VISIBILITY seconds), run it, delete it, on
KEYLESS_TEST_THREADS threads (1). Killed between two steps, it leaves the message to reappear and
the binding half done; the rerun must converge. A run that raises leaves its message to reappear,
as the host does. SIGUSR1: print `stats <json>` (the process's request tally and its pacer's
figures so far); SIGTERM: finish the runs in hand, print them, exit. The environment (settings) is
the test world's.

    python -m tests.faults.worker_process
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    from azure.functions.queue import QueueMessage
    from azure.storage.queue import QueueClient

    from shared.domain.settings import WORK_QUEUE
    from tests.functions.conftest import app_functions

    visibility = int(os.environ.get("KEYLESS_TEST_VISIBILITY", "2"))
    threads = int(os.environ.get("KEYLESS_TEST_THREADS", "1"))
    queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], WORK_QUEUE)
    worker = app_functions()["reconcile_worker"]
    if threads > 1:
        import kubernetes.client  # noqa: F401 - a heavy import, done before the clock starts

        from shared.app import composition

        composition.service()  # built before the clock starts
    stop, report = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: report.set())

    def loop() -> None:
        while not stop.is_set():
            got = False
            for m in queue.receive_messages(max_messages=1, visibility_timeout=visibility):
                got = True
                body = base64.b64decode(m.content)
                try:
                    worker(QueueMessage(id=m.id, body=body, dequeue_count=m.dequeue_count, pop_receipt=m.pop_receipt))
                    queue.delete_message(m)
                except Exception:  # noqa: BLE001 - as the host: the message reappears after its visibility
                    continue
            if not got:
                time.sleep(0.05)  # the host's polling

    print("ready", flush=True)
    if threads <= 1:
        loop()
        return
    pool = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    while not stop.is_set():
        stop.wait(0.1)
        if report.is_set():
            report.clear()
            print("stats " + json.dumps(_stats()), flush=True)
    for thread in pool:
        thread.join(60)
    print("stats " + json.dumps(_stats()), flush=True)


def _stats() -> dict[str, Any]:
    from shared.adapters.counting import attempts
    from shared.app import composition

    pacer = composition.service().engine.clusters._clients.pacer
    stats = getattr(pacer, "stats", None)
    return {
        "attempts": attempts(),
        "pacer": type(pacer).__name__ if pacer is not None else None,
        "shared": stats.as_dict() if stats is not None else None,
        "waited": pacer.waited_seconds if pacer is not None else 0.0,
    }


class WorkerProcesses:
    """`n` worker processes of `threads` threads each, with this process's environment (a World's):
    each ready (app built) when the `with` block starts; `stop()` ends them and returns their stats."""

    def __init__(self, n: int, threads: int, visibility: int) -> None:
        self.n, self.threads, self.visibility = n, threads, visibility
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Any] = []
        self._stats: list[queue.Queue[dict[str, Any]]] = []

    def __enter__(self) -> WorkerProcesses:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KEYLESS_TEST_THREADS": str(self.threads),
            "KEYLESS_TEST_VISIBILITY": str(self.visibility),
        }
        for _ in range(self.n):
            log = tempfile.TemporaryFile("w+")  # stderr, shown when a process fails
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.faults.worker_process"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            )
        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                log.seek(0)
                raise RuntimeError(f"a worker process did not start: {log.read()[-2000:]}")
            lines: queue.Queue[dict[str, Any]] = queue.Queue()
            self._stats.append(lines)
            threading.Thread(target=self._read, args=(proc, lines), daemon=True).start()
        return self

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed when the processes are gone
            for line in proc.stdout:
                if line.startswith("stats "):
                    lines.put(json.loads(line[6:]))

    def snapshot(self, deadline: float = 30.0) -> list[dict[str, Any]]:
        """Each process's stats so far."""
        for proc in self.procs:
            proc.send_signal(signal.SIGUSR1)
        return [lines.get(timeout=deadline) for lines in self._stats]

    def stop(self, deadline: float = 90.0) -> list[dict[str, Any]]:
        """End the processes (the runs in hand finish first); their final stats."""
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        stats = []
        for proc, lines in zip(self.procs, self._stats, strict=True):
            try:
                proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(queue.Empty):
                stats.append(lines.get(timeout=5))
        return stats

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self.logs:
            log.close()


if __name__ == "__main__":
    sys.exit(main())
