"""Azurite that can be stopped and started again on the same ports, keeping its data.

The session's Azurite (tests/azurite.py) takes free ports and throws its data away on stop;
the storage-outage scenario needs the same endpoints back, with the queue and the ledger as
they were, as after a real storage outage.
"""

from __future__ import annotations

import socket
import subprocess
import time

from tests.azurite import Azurite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RestartableAzurite(Azurite):
    def __init__(self) -> None:
        super().__init__()
        self.ports = {"blob": _free_port(), "queue": _free_port(), "table": _free_port()}

    def start(self, timeout: float = 30.0) -> RestartableAzurite:
        if not self.binary.exists():
            raise RuntimeError(f"Azurite is not installed at {self.binary}: run `npm ci` first")
        args = [str(self.binary), "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"]
        args += ["--location", str(self.location)]
        for service, port in self.ports.items():
            args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        deadline, listening = time.monotonic() + timeout, 0
        while listening < 3:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("Azurite did not start")
            if "successfully listening" in self.process.stdout.readline():
                listening += 1
        self.endpoints = {service: f"http://127.0.0.1:{port}" for service, port in self.ports.items()}
        return self

    def pause(self) -> None:
        """Stop the process, keep the data (SIGTERM: Azurite saves its state on the way out)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def resume(self) -> None:
        self.start()
