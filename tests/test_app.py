"""The app, launched as a user launches it (python demo_app.py), driven through gradio_client."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restpg.app import ExploreService, profile_table
from restpg.longlamp import load_records, sample_path
from restpg.models import ModelConfig

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tiny_model_dir):
    port = free_port()
    process = subprocess.Popen([sys.executable, "demo_app.py", "--port", str(port), "--model", str(tiny_model_dir),
                                "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"app exited: {process.stdout.read()}")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("app did not start within 120 s")
    yield url, port
    process.terminate()
    process.wait(timeout=30)


def test_app_serves_on_loopback_and_generates(running_app):
    from gradio_client import Client

    url, port = running_app
    # Bound to loopback only: no other address of this machine answers.
    hostname_ip = socket.gethostbyname(socket.gethostname())
    if not hostname_ip.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((hostname_ip, port), timeout=2).close()
    user = load_records(sample_path("abstract_generation", "user", "val"), "abstract_generation").users()[0]
    client = Client(url, verbose=False)
    reasoning, response, scores, info = client.predict(
        "abstract_generation", "user", "val", user, 0, 3, 6, 0.0, api_name="/generate")
    assert isinstance(reasoning, str) and isinstance(response, str)
    assert set(scores["headers"]) == {"rouge1", "rougeL", "meteor"}
    assert "6 new tokens" in info and "wordnet" in info
    with pytest.raises(Exception, match="has no request 9"):
        client.predict("abstract_generation", "user", "val", user, 9, 3, 6, 0.0, api_name="/generate")


def test_profile_table_puts_retrieved_items_first():
    record = load_records(sample_path("topic_writing", "user", "train"), "topic_writing").records[0]
    table = profile_table(record, k=3)
    assert list(table["retrieved"][:4]) == ["#1", "#2", "#3", ""]
    assert len(table) == len(record.profile) and {"item", "summary", "post"} <= set(table.columns)


def test_service_loads_the_shipped_sample_strictly_clean():
    service = ExploreService(ModelConfig(model="unused"))
    loaded = service.dataset("product_review", "user", "train")
    assert loaded.records and not loaded.problems


def test_dataset_summary_lists_skipped_records(tmp_path):
    import json

    from helpers import review_row
    from restpg.app import dataset_summary

    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [review_row("U1"), dict(review_row("U2"), output="")]))
    summary = dataset_summary(load_records(path, "product_review", strict=False))
    assert summary.splitlines() == ["`mixed.jsonl`: 1 records, 1 users, 1 bad record(s) skipped",
                                    "- 1: field output: empty"]
