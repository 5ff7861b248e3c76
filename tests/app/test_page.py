"""The app, launched as a user launches it (python demo_app.py), driven on loopback through
gradio_client: generate (streamed, stored, regenerated), rate and edit, export, jobs, bad input,
auth, 20 concurrent raters, and a rating that survives kill -9."""

import csv
import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import App
from restpg.app.explore_tab import dataset_summary, profile_table
from restpg.app.train_tab import TRAIN_SFT
from restpg.data.longlamp import load_records, sample_path

VAL_USER = load_records(sample_path("product_review", "user", "val"), "product_review").users()[0]


@pytest.fixture
def app(tiny_model_dir, tmp_path):
    running = App(tiny_model_dir, tmp_path)
    yield running
    running.stop()


def generate(client, endpoint="/generate", dataset="shipped sample", user=VAL_USER, request=0, tokens=6):
    return client.predict(
        dataset, "product_review", "user", "val", user, request, 3, tokens, 0.0, "base", None, api_name=endpoint
    )


def test_generate_streams_stores_and_regenerates(app):
    client = app.client()
    # Bound to loopback only: no other address of this machine answers.
    hostname_ip = socket.gethostbyname(socket.gethostname())
    if not hostname_ip.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((hostname_ip, app.port), timeout=2).close()
    job = client.submit(
        "shipped sample", "product_review", "user", "val", VAL_USER, 0, 3, 6, 0.0, "base", None, api_name="/generate"
    )
    updates = list(job)
    reasoning, response, scores, info, support = job.result()
    assert len(updates) >= 2  # streamed: partial outputs before the final one
    generation_id = scores["data"][0][1]
    assert f"generation {generation_id}" in info and "6 new tokens" in info
    assert scores["headers"] == ["version", "generation", "judge", "rouge1", "rougeL", "meteor"]
    # The same request and settings again: the stored generation, at once.
    stored_info = generate(client)[3]
    assert f"stored generation {generation_id}" in stored_info
    # Other settings: Generate makes a generation with them, never shows the stored one as theirs.
    other = client.predict(
        "shipped sample", "product_review", "user", "val", VAL_USER, 0, 2, 5, 0.0, "base", None, api_name="/generate"
    )[3]
    assert "stored" not in other and generation_id not in other and "5 new tokens" in other
    again = generate(client, "/regenerate")[3]
    assert "stored" not in again and generation_id not in again
    with pytest.raises(Exception, match="has no request 9"):
        generate(client, request=9)


def _status_for_host(port: int, host: str, path: str = "/config") -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Host": host})
    status = connection.getresponse().status
    connection.close()
    return status


def test_the_started_app_refuses_a_host_it_was_not_started_for(tiny_model_dir, tmp_path):
    """DNS rebinding: a foreign name pointed at 127.0.0.1 gets 403 on every route, the API included;
    addresses, localhost and --allowed-host names are served."""
    running = App(tiny_model_dir, tmp_path, "--allowed-host", "lab.example.org")
    try:
        for host in ("rebind.evil.example", f"rebind.evil.example:{running.port}", "evil.lab.example.org"):
            assert _status_for_host(running.port, host) == 403, host
            assert _status_for_host(running.port, host, "/gradio_api/info") == 403, host
        for host in (f"127.0.0.1:{running.port}", f"localhost:{running.port}", "lab.example.org"):
            assert _status_for_host(running.port, host) == 200, host
    finally:
        running.stop()


def test_rate_edit_export_and_agreement(app):
    client = app.client()
    generation_id = generate(client)[2]["data"][0][1]
    assert "saved rating" in client.predict(generation_id, "alice", 4, 3, 2, False, "first", api_name="/rate")
    assert "saved rating" in client.predict(generation_id, "alice", 5, 3, 2, True, "edited", api_name="/rate")
    assert "saved rating" in client.predict(generation_id, "bob", 5, 2, 2, True, "", api_name="/rate")
    with pytest.raises(Exception, match="faithfulness"):
        client.predict(generation_id, "alice", 9, 3, 2, False, "", api_name="/rate")
    # only the scale's integers: never a boolean, a fraction rounded down, or a text that is not one
    for bad in (True, 3.9, "3.0", "five"):
        with pytest.raises(Exception, match="not a score on the scale"):
            client.predict(generation_id, "carol", bad, 3, 2, False, "", api_name="/rate")
    with pytest.raises(Exception, match="copies_output.*not true or false"):
        client.predict(generation_id, "carol", 3, 3, 2, "maybe", "", api_name="/rate")
    assert "saved rating" in client.predict(generation_id, "carol", "3", 3, 2, "false", "", api_name="/rate")
    with pytest.raises(Exception, match="annotator"):
        client.predict(generation_id, "   ", 3, 3, 2, False, "", api_name="/rate")
    with open(client.predict(api_name="/export_csv"), newline="") as handle:
        rows = {row["annotator"]: row for row in csv.DictReader(handle)}
    assert (
        set(rows) == {"alice", "bob", "carol"}
        and rows["alice"]["comment"] == "edited"
        and rows["alice"]["faithfulness"] == "5"
    )
    assert rows["carol"]["copies_output"] in ("0", "False")  # "false" is no
    jsonl = [json.loads(line) for line in Path(client.predict(api_name="/export_jsonl")).read_text().splitlines()]
    assert len(jsonl) == 3 and all(r["reasoning"] is not None and r["model_version"] for r in jsonl)
    table, note = client.predict(api_name="/agreement")
    assert "1 item(s) rated by 2 or more" in note and [row[0] for row in table["data"]][:3] == [
        "faithfulness",
        "relevance",
        "usefulness",
    ]
    # history kept: two saves by alice
    from restpg.store.database import Store
    from restpg.store.ratings import RatingStore

    assert len(RatingStore(Store(app.runs_dir / "restpg.db")).history(generation_id, "alice")) == 2


def test_bad_input_shows_an_error_and_the_app_keeps_serving(app, tmp_path):
    from gradio_client import handle_file

    from helpers import review_row

    client = app.client()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{this is not json\n")
    _, message = client.predict(handle_file(str(broken)), "product_review", "user", api_name="/upload")
    assert message.startswith("upload refused") and "broken.jsonl" in message
    assert "/tmp" not in message and "gradio" not in message  # no server path in the page
    long_request = review_row("LONG", request="Generate the review text for " + "a very long product name " * 2000)
    upload = tmp_path / "long.jsonl"
    upload.write_text(json.dumps(long_request) + "\n")

    dataset, message = client.predict(handle_file(str(upload)), "product_review", "user", api_name="/upload")
    stored = f"uploads/long-{hashlib.sha256(upload.read_bytes()).hexdigest()[:10]}.jsonl"  # named by content
    assert message == f"uploaded as {stored}"
    with pytest.raises(Exception, match="tokens without any profile item; the limit is"):
        generate(client, dataset=stored, user="LONG")
    with pytest.raises(Exception, match="not a path inside"):
        generate(client, dataset="../../etc/passwd.jsonl")
    assert generate(client)[3]  # still serving


def test_twenty_concurrent_raters_lose_nothing(app):
    client = app.client()
    ids = [generate(client, request=r)[2]["data"][0][1] for r in range(3)]
    errors, saved = [], []

    def rater(n: int) -> None:
        try:
            own = app.client()
            for generation_id in ids:
                saved.append(
                    own.predict(generation_id, f"rater{n}", 1 + n % 5, 3, 4, n % 2 == 0, f"c{n}", api_name="/rate")
                )
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=rater, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(saved) == 60
    import sqlite3

    with sqlite3.connect(app.runs_dir / "restpg.db") as db:
        assert db.execute("SELECT count(*) FROM ratings").fetchone()[0] == 60


def test_a_confirmed_rating_survives_kill_9(tiny_model_dir, tmp_path):
    app = App(tiny_model_dir, tmp_path)
    try:
        client = app.client()
        generation_id = generate(client)[2]["data"][0][1]
        assert "saved rating" in client.predict(generation_id, "carol", 2, 2, 2, False, "", api_name="/rate")
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait(timeout=30)
    finally:
        app.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "runs" / "restpg.db") as db:
        assert db.execute("SELECT faithfulness FROM ratings WHERE annotator = 'carol'").fetchall() == [(2,)]


def test_auth_is_required_when_set(tiny_model_dir, tmp_path):
    """Several logins; ratings carry the login name whatever is typed; only named trainers start jobs."""
    app = App(tiny_model_dir, tmp_path, "--auth", "ann:secret", "--auth", "bob:pw", "--trainers", "ann")
    try:
        with pytest.raises(Exception):  # noqa: B017  (the client fails to connect, in whatever way its version does)
            app.client()
        bob = app.client(auth=("bob", "pw"))
        generation_id = generate(bob)[2]["data"][0][1]
        assert "by bob" in bob.predict(generation_id, "mallory", 3, 3, 3, False, "", api_name="/rate")
        with pytest.raises(Exception, match="bob may not start or cancel training jobs; allowed: ann"):
            bob.predict(
                "cpu-small",
                "product_review",
                2,
                1,
                2,
                "rougeL",
                "",
                "base",
                False,
                "x",
                "train SFT in this job (stages 1-2)",
                api_name="/start_job",
            )
        from restpg.store.database import Store
        from restpg.store.ratings import RatingStore

        assert [r["annotator"] for r in RatingStore(Store(app.runs_dir / "restpg.db")).all()] == ["bob"]
        # A non-trainer exports their own ratings only and reads no job's config, folder or log.
        ann = app.client(auth=("ann", "secret"))
        assert "by ann" in ann.predict(generation_id, "", 4, 4, 4, False, "", api_name="/rate")

        def annotators(path):
            with open(path, newline="") as handle:
                return {row["annotator"] for row in csv.DictReader(handle)}

        assert annotators(bob.predict(api_name="/export_csv")) == {"bob"}
        assert annotators(ann.predict(api_name="/export_csv")) == {"ann", "bob"}
        from restpg.app.jobs import KIND

        Store(app.runs_dir / "restpg.db").start_run("r1", KIND, app.runs_dir / "jobs" / "r1", {"secret": 1}, 1)
        [seen_by_bob] = json.loads(bob.predict(api_name="/jobs"))
        [seen_by_ann] = json.loads(ann.predict(api_name="/jobs"))
        assert {"config", "run_dir", "pid"}.isdisjoint(seen_by_bob) and seen_by_bob["run_id"] == "r1"
        assert json.loads(seen_by_ann["config"]) == {"secret": 1}
    finally:
        app.stop()


def test_start_and_cancel_a_training_job(app):
    client = app.client()
    note, *_ = client.predict(
        "cpu-small",
        "product_review",
        2,
        1,
        2,
        "preset's value",
        "",
        "base",
        True,
        "smoke",
        TRAIN_SFT,
        api_name="/start_job",
    )
    run_id = note.removeprefix("started ")
    assert run_id.endswith("smoke")
    job = next(j for j in json.loads(client.predict(api_name="/jobs")) if j["run_id"] == run_id)
    assert job["status"] == "running" and job["pid"]  # shown at once, before the run itself reports
    deadline = time.time() + 10  # a CPU job runs at a lower priority than the page
    while os.getpriority(os.PRIO_PROCESS, job["pid"]) != 10 and time.time() < deadline:
        time.sleep(0.1)
    assert os.getpriority(os.PRIO_PROCESS, job["pid"]) == 10
    with pytest.raises(Exception, match="already running"):
        client.predict(
            "cpu-small",
            "product_review",
            2,
            1,
            2,
            "preset's value",
            "",
            "base",
            True,
            "second",
            TRAIN_SFT,
            api_name="/start_job",
        )
    client.predict(run_id, api_name="/cancel_job")
    deadline = time.time() + 60
    while time.time() < deadline:
        job = next(j for j in json.loads(client.predict(api_name="/jobs")) if j["run_id"] == run_id)
        if job["status"] != "running":
            break
        time.sleep(0.5)
    assert job["status"] == "cancelled", job
    with pytest.raises(ProcessLookupError):
        os.kill(job["pid"], 0)
    command = Path(run_id, "job.log").read_text()
    assert "restpg train" in command and all(f in command for f in ("--users 2 ", "--rounds 1 ", "--samples 2 "))
    assert "--tau" not in command and "--reward" not in command  # empty fields: the preset's values


def test_profile_table_puts_retrieved_items_first():
    record = load_records(sample_path("topic_writing", "user", "train"), "topic_writing").records[0]
    table = profile_table(record, k=3)
    assert list(table["retrieved"][:4]) == ["#1", "#2", "#3", ""]
    assert len(table) == len(record.profile) and {"item", "summary", "post"} <= set(table.columns)


def test_dataset_summary_lists_skipped_records(tmp_path):
    from helpers import review_row

    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [review_row("U1"), dict(review_row("U2"), output="")]))
    summary = dataset_summary(load_records(path, "product_review", strict=False))
    assert summary.splitlines() == [
        "mixed.jsonl: 1 records, 1 users, 1 bad record(s) skipped",
        "- 1: field output: empty",
    ]


def test_stop_ends_a_streaming_generation(app):
    client = app.client()
    job = client.submit(
        "shipped sample", "product_review", "user", "val", VAL_USER, 1, 3, 400, 0.7, "base", None, api_name="/generate"
    )
    deadline = time.time() + 60
    while not job.outputs() and time.time() < deadline:  # wait for the first tokens
        time.sleep(0.2)
    client.predict(api_name="/stop")
    reasoning, response, scores, info, _ = job.result(timeout=60)
    assert "stopped by you" in info
    assert int(info.split(" new tokens")[0].split()[-1]) < 400


def test_compare_two_model_versions_on_the_same_request(app, tiny_model_dir):
    from helpers import make_adapter

    make_adapter(tiny_model_dir, app.runs_dir / "jobs" / "demo" / "round-1" / "adapter", seed=3)
    client = app.client()
    args = ("shipped sample", "product_review", "user", "val", VAL_USER, 0, 3, 6, 0.0, "base", "jobs/demo round-1")
    client.predict(*args, api_name="/compare_a")
    reasoning_b, response_b, scores, info, _ = client.predict(*args, api_name="/compare_b")
    assert [row[0] for row in scores["data"]] == ["base", "jobs/demo round-1"]
    assert info.startswith("jobs/demo round-1: generation")
    with pytest.raises(Exception, match="unknown model version"):
        client.predict(*args[:-1], "jobs/nothing round-9", api_name="/compare_b")
