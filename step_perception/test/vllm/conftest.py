"""Fixtures of the vLLM tests: one real vLLM server (tiny Step-3.7 model) for the whole test run.

The server comes from serving/vllm_server.py, the module ``make vllm-serve`` and the benchmarks
use too. Without ``.venv-vllm`` the tests FAIL (they do not skip): ``make test`` builds it first
(``make vllm``), and a silently skipped production-server suite would hide a broken set-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from vllm_server import VllmServer, VllmServerConfig, VllmServerError, require_built

_SERVER_KEY = pytest.StashKey[VllmServer]()


@pytest.fixture(scope="session")
def vllm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """A started vLLM server on 127.0.0.1 (stopped at the end of the session, whatever happens)."""
    try:
        require_built()
    except VllmServerError as err:
        pytest.fail(str(err), pytrace=False)
    server = VllmServer(
        VllmServerConfig(
            log_path=tmp_path_factory.mktemp("vllm") / "server.log",
            # The engine's scheduler state in the log every 0.5 s (the batching test reads it).
            env={"VLLM_LOG_STATS_INTERVAL": "0.5"},
        )
    )
    try:
        server.start()  # stops the process group itself when the start fails
    except VllmServerError as err:
        pytest.fail(str(err), pytrace=False)
    print(f"vLLM server ready in {server.ready_after_s:.1f} s at {server.base_url}")
    request.config.stash[_SERVER_KEY] = server
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Attach the end of the server's log to every failed vLLM test."""
    outcome = yield
    report = outcome.get_result()
    server = item.config.stash.get(_SERVER_KEY, None)
    if report.failed and server is not None:
        report.sections.append(("vLLM server log (end)", server.log_tail(6000)))
