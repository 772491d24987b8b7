"""A real mosquitto broker on loopback for tests: plain, with a password file, or TLS with a test CA.

    with Broker(tmp_path) as broker:             # anonymous, mqtt://127.0.0.1:<port>
        ...
        broker.stop(); broker.start()            # an outage, same port and persistence
    Broker(tmp_path, users={"dev": "secret"})    # refuses anonymous clients and wrong passwords
    Broker(tmp_path, tls=True)                   # mqtts://; broker.ca is the CA file to trust
    Broker(tmp_path, persistence=True)           # sessions and queued QoS 1 messages survive stop/start
    Broker(tmp_path, max_queued=0)               # no per-client queue bound (mosquitto's default is 1000)

The broker is the Debian ``mosquitto`` binary (``scripts/test`` installs it); tests that need it
skip with the reason when it is absent.
"""
from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def require_mosquitto() -> str:
    """The mosquitto binary, or skip the test naming the package to install."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto; scripts/test installs it)")
    return MOSQUITTO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-mer test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


class Broker:
    """One mosquitto process with its own configuration, port and persistence under ``folder``."""

    def __init__(self, folder: Path, *, users: dict[str, str] | None = None, tls: bool = False,
                 persistence: bool = False, max_queued: int | None = None) -> None:
        self.binary = require_mosquitto()
        self.folder = Path(folder) / f"mosquitto-{free_port()}"
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.tls = tls
        self.ca: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # As root mosquitto drops to user "mosquitto", who could not read these files: stay who we are.
        store = [f"persistence_location {self.folder}/"] if persistence else []
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1",
                 f"persistence {'true' if persistence else 'false'}", *store,
                 f"log_dest file {self.folder / 'mosquitto.log'}", "log_type error", "log_type warning"]
        if max_queued is not None:  # mosquitto's default keeps 1000 QoS 1 messages per offline/slow client
            lines += [f"max_queued_messages {max_queued}"]
        if users:
            passwd = self.folder / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        if tls:
            self.ca, cert, key = _make_ca(self.folder)
            lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Broker:
        """Start the broker and wait until its port accepts connections."""
        self._proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self._proc.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the broker (an outage for its clients); :meth:`start` brings it back on the same port."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
