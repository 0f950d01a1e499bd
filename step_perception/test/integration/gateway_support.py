"""Model workers behind an ``smg`` gateway on 127.0.0.1, for the fleet test and its bench.

Everything here is a real process: each worker is ``worker_proc.py`` (model_server.py's
OpenAI-compatible handler on a fixed port), and the gateway is ``smg launch`` from
``.venv-smg`` (``make smg``) with its default HTTP router (see ``Gateway.backend``). The
gateway listens on 127.0.0.1 and so does its Prometheus listener, which would otherwise bind
0.0.0.0. No ROS here, so bench/ can import it too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def smg_binary() -> Path | None:
    """The ``smg`` CLI: ``$SMG``, else ``.venv-smg/bin/smg`` (``make smg``), else PATH."""
    candidates = [os.environ.get("SMG", ""), str(REPO / ".venv-smg" / "bin" / "smg")]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    found = shutil.which("smg")
    return Path(found) if found else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a TCP socket listening on ``port`` (Linux ``/proc/net/tcp*``)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            if len(addr) == 8:  # IPv4, little-endian
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
            else:  # IPv6: four little-endian 32-bit words
                raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def _get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def _wait(pred: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout} s\n{tail}")


@dataclass
class Worker:
    """One model worker process on a fixed loopback port; can be killed and started again."""

    port: int
    log_dir: Path
    service_ms: float = 0.0
    slots: int = 1
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """The worker's base address as the gateway knows it (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        """Start the process and wait until it answers ``/health``."""
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"worker_{self.port}_{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "worker_proc.py"),
                    str(self.port),
                    str(self.service_ms),
                    str(self.slots),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=HERE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        _wait(lambda: _get(f"{self.url}/health")[0] == 200, 20.0, f"worker {self.port}", log)
        return self

    def answered(self) -> int:
        """Chat completions this process has answered (0 when it is down)."""
        status, body = _get(f"{self.url}/stats")
        return int(json.loads(body)["answered"]) if status == 200 else 0

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-request, as a crashed server does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        self.proc = None


@dataclass
class Gateway:
    """``smg launch`` (HTTP router) in front of ``workers``, all on 127.0.0.1."""

    workers: list[Worker]
    log_dir: Path
    policy: str = "round_robin"
    # "" = smg's default HTTP router, which balances, retries and re-admits a recovered worker.
    # "openai" is smg's mode for external providers: measured here, it sent every request to
    # one worker, answered 503 when that one died and never used the restarted one again.
    backend: str = ""
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL the node is given as its ``endpoint``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, smg: Path) -> list[str]:
        """The gateway's command line (also what docs/workstation.md shows)."""
        return [
            str(smg),
            "launch",
            *(["--backend", self.backend] if self.backend else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--worker-urls",
            *(w.url for w in self.workers),
            "--policy",
            self.policy,
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(self.metrics_port),
            "--health-check-endpoint",
            "/health",
            "--health-check-interval-secs",
            "1",
            "--health-failure-threshold",
            "1",
            "--health-success-threshold",
            "1",
            "--log-level",
            "warn",
        ]

    def healthy_workers(self) -> int:
        """Workers the gateway counts healthy now (its ``/readiness``), 0 when it is down."""
        status, body = _get(f"http://127.0.0.1:{self.port}/readiness")
        return int(json.loads(body).get("healthy_workers", 0)) if status == 200 else 0

    def start(self) -> Gateway:
        """Start smg and wait until it counts every worker healthy."""
        smg = smg_binary()
        if smg is None:
            raise FileNotFoundError("smg not installed: run `make smg`")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / "smg.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(smg), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait(lambda: self.healthy_workers() == len(self.workers), 30.0, "smg gateway", log)
        except Exception:
            self.stop()
            raise
        return self

    def metrics(self) -> str:
        """The Prometheus text the gateway exposes on its loopback metrics listener."""
        return _get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2.0)[1].decode()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self.proc = None


def start_fleet(
    n_workers: int, log_dir: Path, *, service_ms: float = 0.0, slots: int = 1
) -> tuple[Gateway, list[Worker]]:
    """``n_workers`` workers and a gateway in front of them, all started and ready."""
    workers = [Worker(free_port(), log_dir, service_ms, slots).start() for _ in range(n_workers)]
    try:
        gateway = Gateway(workers, log_dir).start()
    except Exception:
        for w in workers:
            w.kill()
        raise
    return gateway, workers


def stop_fleet(gateway: Gateway, workers: list[Worker]) -> None:
    """Stop the gateway, then every worker."""
    gateway.stop()
    for w in workers:
        w.kill()
