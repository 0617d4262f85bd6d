from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import GatewayProcess, Upstream  # noqa: E402


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config_text: str, name: str = "gw", **kwargs: object) -> GatewayProcess:
        workdir = tmp_path / name
        workdir.mkdir()
        gw = GatewayProcess(workdir, config_text, **kwargs)  # type: ignore[arg-type]
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
