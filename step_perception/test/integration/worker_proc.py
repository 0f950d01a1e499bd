"""One model worker in its own process: ``python worker_proc.py PORT [SERVICE_MS] [SLOTS]``.

It serves model_server.py's OpenAI-compatible handler on ``127.0.0.1:PORT`` (a fixed port,
so a worker that is killed and started again comes back at the address the gateway knows),
plus ``GET /health`` for the gateway's health checks and ``GET /stats`` (answers so far).
``SERVICE_MS`` (default 0) is the time one answer takes, and ``SLOTS`` (default 1) how many
answers it computes at once, like a GPU server with a fixed batch: requests beyond ``SLOTS``
wait. That is what makes a second worker add throughput. A line ``ready PORT`` on stdout
says it is listening.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import ThreadingHTTPServer

from model_server import _Handler, _State


class _Worker(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # rebind at once after a kill (TIME_WAIT)

    def __init__(self, port: int, service_s: float, slots: int) -> None:
        super().__init__(("127.0.0.1", port), _WorkerHandler)
        self.state = _State()
        self.service_s = service_s
        self.slots = threading.Semaphore(slots)


class _WorkerHandler(_Handler):
    server: _Worker  # type: ignore[assignment]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health":
            self._json(200, {"status": "ok"})
            return
        if self.path == "/stats":
            with self.server.state.lock:
                self._json(200, {"answered": len(self.server.state.seen)})
            return
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        with self.server.slots:
            if self.server.service_s > 0:
                time.sleep(self.server.service_s)
            super().do_POST()


def main(argv: list[str]) -> int:
    port = int(argv[0])
    service_ms = float(argv[1]) if len(argv) > 1 else 0.0
    slots = int(argv[2]) if len(argv) > 2 else 1
    server = _Worker(port, service_ms / 1000.0, slots)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
