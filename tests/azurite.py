"""Azurite (the Storage emulator, from npm) for the test run: started once, on free ports.

Started straight from node_modules/.bin (not through npx, whose death leaves node running),
with --skipApiVersionCheck (the current storage SDKs speak a newer API version than 3.35
knows) and --disableTelemetry (no traffic leaves the machine).

`Azurite(ca, oauth=True)` serves HTTPS with a certificate from the test CA and takes Entra tokens
(`--oauth basic`: Azurite checks a bearer token's format, lifetime, issuer and audience, not its
signature), for identity-based connections (tests/e2e/test_storage_identity.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.emulators.common import TestCA

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# The storage emulator's published, well-known development key (not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (https?://\S+)")


class Azurite:
    def __init__(self, ca: TestCA | None = None, oauth: bool = False) -> None:
        """`ca`: serve HTTPS with a certificate it issues for 127.0.0.1; `oauth` (needs HTTPS): take Entra tokens."""
        if oauth and ca is None:
            raise ValueError("Azurite takes OAuth tokens over HTTPS only: give a CA")
        self.binary = ROOT / "node_modules" / ".bin" / "azurite"
        self.location = Path(tempfile.mkdtemp(prefix="keyless-azurite-"))
        self.process: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, str] = {}
        self.extra_args: list[str] = []
        if ca is not None:
            leaf = ca.ca.issue_cert("127.0.0.1", "localhost")
            cert, key = self.location / "cert.pem", self.location / "key.pem"
            cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            key.write_bytes(leaf.private_key_pem.bytes())
            self.extra_args += ["--cert", str(cert), "--key", str(key)]
        if oauth:
            self.extra_args += ["--oauth", "basic"]

    def start(self, timeout: float = 30.0) -> Azurite:
        if not self.binary.exists():
            raise RuntimeError(f"Azurite is not installed at {self.binary}: run `npm ci` first")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                "--location",
                str(self.location),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                "0",
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                "0",
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while len(self.endpoints) < 3:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"Azurite did not start; got {self.endpoints}")
            line = self.process.stdout.readline()
            match = _LISTENING.search(line)
            if match:
                self.endpoints[match.group(1).lower()] = match.group(2)
        return self

    @property
    def connection_string(self) -> str:
        e = self.endpoints
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={e['blob']}/{ACCOUNT};QueueEndpoint={e['queue']}/{ACCOUNT};"
            f"TableEndpoint={e['table']}/{ACCOUNT}"
        )

    def service_uri(self, service: str) -> str:
        """The service URI of the emulator's account (path style, as Azurite serves it on an IP address)."""
        return f"{self.endpoints[service]}/{ACCOUNT}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        shutil.rmtree(self.location, ignore_errors=True)


def connection_string_from_env() -> str | None:
    """An Azurite someone else started (e.g. a developer's), if named in the environment."""
    return os.environ.get("KEYLESS_TEST_STORAGE_CONNECTION_STRING") or None
