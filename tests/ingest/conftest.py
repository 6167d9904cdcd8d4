"""A real uvicorn server on a free loopback port, serving a fresh workspace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from tripwire.ingest.app import create_app
from tripwire.store.buffer import Buffer
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace, init_workspace


@dataclass
class LiveServer:
    url: str
    workspace: Workspace
    key: str
    buffer: Buffer
    keys: KeyStore

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stored(self) -> list[dict]:
        return [row.envelope() for row in self.buffer.read_after(0, 1_000_000)]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def start_server(
    root: Path, **config: object
) -> tuple[LiveServer, uvicorn.Server, threading.Thread]:
    workspace = init_workspace(root)
    if config:
        import yaml

        data = yaml.safe_load((root / "tripwire.yaml").read_text())
        data["ingest"].update(config)
        (root / "tripwire.yaml").write_text(yaml.safe_dump(data))
        workspace = Workspace.load(root)
    buffer = Buffer.for_workspace(workspace)
    keys = KeyStore.for_workspace(workspace)
    key = keys.create("app").secret
    app = create_app(workspace, buffer=buffer, keys=keys)
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = sock.getsockname()[1]
    return LiveServer(f"http://127.0.0.1:{port}", workspace, key, buffer, keys), server, thread


def stop_server(live: LiveServer, server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=20)
    live.buffer.close()
    live.keys.close()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """A factory of servers with given ``ingest`` settings, stopped after the test."""
    running: list[tuple[LiveServer, uvicorn.Server, threading.Thread]] = []

    def make(**config: object) -> LiveServer:
        running.append(start_server(tmp_path / f"ws{len(running)}", **config))
        return running[-1][0]

    yield make
    for item in running:
        stop_server(*item)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    live, server, thread = start_server(tmp_path / "ws")
    yield live
    stop_server(live, server, thread)


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole module (hypothesis tests run many requests against it)."""
    live, server, thread = start_server(tmp_path_factory.mktemp("shared") / "ws")
    yield live
    stop_server(live, server, thread)
