"""A hub id where the hub cannot be reached fails at once, in one line naming the key to
set; no network is used (the endpoint is a closed local port or a local server)."""

from __future__ import annotations

import http.server
import os
import socket
import threading

import pytest
from huggingface_hub import constants

from irpo.run import hub

unreachable = hub.unreachable  # before conftest's no_hub_probe replaces it


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_answers_is_false_for_a_closed_port():
    assert not hub.answers(closed_port_url(), timeout=2)


@pytest.mark.parametrize("status", [200, 404])
def test_any_http_answer_counts(status):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub.answers(f"http://127.0.0.1:{server.server_port}", timeout=2)
    finally:
        server.shutdown()


def test_a_silent_server_is_given_up_on():
    with socket.socket() as s:  # accepts the connection (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not hub.answers(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=0.5)


@pytest.fixture
def fresh_probe(monkeypatch):
    """unreachable() as in a new process; the offline switch it makes is undone after."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    unreachable.cache_clear()
    yield
    unreachable.cache_clear()


def test_no_answer_switches_the_process_offline(fresh_probe, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    assert unreachable() == f"{constants.ENDPOINT} did not answer within 2 s"
    assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"


def test_hf_hub_offline_is_not_probed(fresh_probe, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "answers", lambda *a, **k: pytest.fail("probed although offline"))
    assert unreachable() == "HF_HUB_OFFLINE is set"


def hub_unreachable_env(tmp_path) -> dict:
    return {
        "HF_ENDPOINT": closed_port_url(),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "",
        "TRANSFORMERS_OFFLINE": "",
    }


def the_one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""
    return lines[0]


def test_a_hub_data_set_fails_at_once_in_one_line(cli, tmp_path):
    line = the_one_line(cli("task=gsm8k", "dry_run=true", env=hub_unreachable_env(tmp_path), timeout=120))
    assert line.startswith(
        "irpo: error: task.data_path: openai/gsm8k (main, train) is not in the local Hugging Face cache"
    )
    assert "did not answer within 2 s" in line and line.endswith("task.data_path=<file or directory>")


def test_a_hub_model_fails_at_once_in_one_line(cli, tmp_path):
    proc = cli(
        "model.path=owner/name",
        "iterations=1",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=hub_unreachable_env(tmp_path),
        timeout=120,
    )
    line = the_one_line(proc)
    assert line.startswith("irpo: error: model.path: owner/name is not in the local Hugging Face cache")
    assert line.endswith("model.path=<checkpoint directory>")
