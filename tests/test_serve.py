"""``seqtag serve``: a real server on 127.0.0.1 (a subprocess on a free port, a tiny model trained here), asked over
HTTP with urllib; answers compared with ``Tagger.predict`` in this process. Request checking is also tested
without a server, and ``scripts/load_test.py`` runs a few requests against the server and refuses other hosts."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("litserve", reason="seqtag serve needs LitServe: pip install 'seqtag[serve]'")
pytestmark = pytest.mark.slow  # a model trained and a server started: about a minute on 2 busy cores

from seqtag.cli import main  # noqa: E402
from seqtag.serving.requests import Limits, RequestError, parse_request  # noqa: E402
from seqtag.serving.server import load_tagger  # noqa: E402
from seqtag.tagger import Tagger  # noqa: E402
from tests.conftest import write  # noqa: E402
from tests.test_cli import QUICKSTART, ROOT, seqtag  # noqa: E402

TEXT = "Angela Merkel met Emmanuel Macron in Paris. The talks ended on Monday.\n\nKrakow rocks!"
LIMITS = ["--max-tokens", "300", "--max-request-bytes", "20000", "--max-n-best", "4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fit")
    split = (QUICKSTART / "train.conll").read_text().split("\n\n")
    train = write(tmp / "train.conll", "\n\n".join(split[:120]) + "\n")
    dev = write(tmp / "dev.conll", "\n\n".join(split[120:140]) + "\n")
    fit = seqtag(
        "fit", "--config", ROOT / "configs" / "quickstart.yaml", "--data.train", train, "--data.validation", dev,
        "--data.test", "null", "--model.word_dim", 8, "--model.hidden_size", 16, "--trainer.max_epochs", 1,
        "--data.cache_dir", tmp / "cache", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.default_root_dir", tmp / "runs",
    )  # fmt: skip
    return Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])


@pytest.fixture(scope="module")
def tagger(checkpoint) -> Tagger:
    return Tagger.load(checkpoint)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """``seqtag serve`` in its own process group on a free port; yields its URL and log file, always stops it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "seqtag.cli", "serve", "--model", str(checkpoint), "--port", str(port)]
    command += [*LIMITS, "--max-batch-size", "8", "--batch-timeout", "0.05", "--log-level", "debug"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"seqtag serve did not start:\n{log.read_text()[-3000:]}")
        yield url, log
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


def post(url: str, body, raw: bool = False, chunked: bool = False) -> tuple[int, object]:
    """POSTs ``body`` (JSON-encoded unless ``raw`` bytes) to /predict; returns the status and the decoded JSON.
    ``chunked``: without a Content-Length, in chunks of 4096 bytes."""
    data = body if raw else json.dumps(body).encode()
    if chunked:
        data = iter([data[i : i + 4096] for i in range(0, len(data), 4096)])
    request = urllib.request.Request(url + "/predict", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def same_records(served: list[dict], expected: list[dict]) -> None:
    """Tokens, offsets, tags and spans equal; probabilities equal up to float noise (batches differ)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        assert got["tokens"] == want["tokens"] and got["tags"] == want["tags"]
        assert [{**s, "confidence": 0} for s in got["spans"]] == [{**s, "confidence": 0} for s in want["spans"]]
        for s, t in zip(got["spans"], want["spans"]):
            assert s["confidence"] == pytest.approx(t["confidence"], abs=1e-4)


def test_health(server):
    url, _ = server
    assert urllib.request.urlopen(url + "/health", timeout=5).status == 200


def test_text_request_gives_records_whose_offsets_slice_the_text(server, tagger):
    url, _ = server
    status, answer = post(url, {"text": TEXT})
    assert status == 200 and set(answer) == {"sentences"}
    records = answer["sentences"]
    assert len(records) == 3  # two sentences, then a paragraph
    for record in records:
        assert record["input"] == 0 and len(record["tags"]) == len(record["tokens"])
        assert "n_best" not in record and "marginals" not in record
        for token in record["tokens"]:
            assert TEXT[token["char_start"] : token["char_end"]] == token["text"]
        for span in record["spans"]:
            assert TEXT[span["char_start"] : span["char_end"]] == span["text"]
    same_records(records, tagger.predict(TEXT))


def test_tokens_request_with_n_best_and_marginals(server, tagger):
    url, _ = server
    tokens = ["Peter", "Blackburn", "visited", "Brussels", "."]
    status, answer = post(url, {"tokens": tokens, "n_best": 3, "marginals": True})
    assert status == 200
    (record,) = answer["sentences"]
    assert [t["text"] for t in record["tokens"]] == tokens and record["tokens"][1]["char_start"] == 6
    (expected,) = tagger.predict([tokens], n_best=3, marginals=True)
    same_records([record], [expected])
    assert [n["tags"] for n in record["n_best"]] == [n["tags"] for n in expected["n_best"]]
    assert len(record["marginals"]) == len(tokens)


def test_list_request_answers_a_list_in_order(server, tagger):
    url, _ = server
    body = [{"text": "Krakow rocks!"}, {"tokens": ["EU", "rejects", "it"], "n_best": 2}, {"text": TEXT}]
    status, answer = post(url, body)
    assert status == 200 and isinstance(answer, list) and len(answer) == 3
    assert [len(a["sentences"]) for a in answer] == [1, 1, 3]
    for i, (item, a) in enumerate(zip(body, answer)):
        assert {r["input"] for r in a["sentences"]} == {i}  # the object's index in the body
        same_records(a["sentences"], tagger.predict([item.get("text") or item["tokens"]]))
    assert len(answer[1]["sentences"][0]["n_best"]) == 2 and "n_best" not in answer[0]["sentences"][0]


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'{"text": "unfinished', 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"42", 422, "object"),
        (b"[]", 422, "empty list"),
        (b'{"txt": "Hello"}', 422, "unknown field 'txt'"),
        (b'{"text": "a", "tokens": ["a"]}', 422, "either"),
        (b'{"text": 5}', 422, "body.text should be a string"),
        (b'{"text": "  \\n "}', 422, "body.text is empty"),
        (b'{"tokens": "Hello"}', 422, "body.tokens should be a non-empty list"),
        (b'{"tokens": ["a", 3]}', 422, "body.tokens[1]"),
        (b'[{"text": "a"}, {"text": "b", "n_best": 5}]', 422, "body[1].n_best should be an integer from 0 to 4"),
        (b'{"text": "a", "n_best": -1}', 422, "n_best"),
        (b'{"text": "a", "n_best": true}', 422, "n_best"),
        (b'{"text": "a", "marginals": "yes"}', 422, "marginals"),
        (b'{"tokens": ["a"], "features": [["NN"]]}', 422, "no feature columns"),
        (json.dumps({"tokens": ["w"] * 301}).encode(), 413, "more than 300 tokens"),
        (json.dumps({"text": "w. " * 200 + "x " * 101}).encode(), 413, "more than 300 tokens"),
        (json.dumps({"text": "x" * 30000}).encode(), 413, "larger than 20000 bytes"),
    ],
)
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server, body, status, words):
    url, _ = server
    got, answer = post(url, body, raw=True)
    assert got == status and words in answer["detail"], answer
    assert post(url, {"tokens": ["Paris"]})[0] == 200


def test_a_large_body_in_chunks_gets_413(server):
    # The server reads and drops the rest of the body before it answers, so the client, which sends the whole body
    # before it reads, gets the 413 and not a reset connection. Several times: that used to fail now and then.
    url, _ = server
    for _ in range(5):
        got, answer = post(url, {"text": "x " * 15000}, chunked=True)
        assert got == 413 and "larger than 20000 bytes" in answer["detail"]
    assert post(url, {"text": "Paris."}, chunked=True)[0] == 200


def test_concurrent_requests_are_batched_and_each_answered_correctly(server, tagger):
    url, log = server
    texts = [f"Angela Merkel met {name} in Berlin on day {i}." for i, name in enumerate(["Macron", "Biden"] * 12)]
    answers: dict[int, tuple] = {}
    barrier = threading.Barrier(len(texts))

    def client(i: int) -> None:
        barrier.wait()
        answers[i] = post(url, {"text": texts[i]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(answers) == list(range(len(texts)))
    expected = tagger.predict(texts)
    for i, (status, answer) in answers.items():
        assert status == 200
        same_records(answer["sentences"], [{**expected[i], "input": 0}])
    batches = [int(line.split("tagged ")[1].split()[0]) for line in log.read_text().splitlines() if "tagged " in line]
    assert max(batches) > 1, batches  # some requests were tagged together


def test_load_test_script_runs_locally_and_refuses_other_hosts(server, tmp_path):
    url, _ = server
    data = write(tmp_path / "few.conll", "\n\n".join((QUICKSTART / "test.conll").read_text().split("\n\n")[:20]))
    script = [sys.executable, str(ROOT / "scripts" / "load_test.py"), "--data", str(data)]
    run = subprocess.run(
        [*script, "--url", url, "--requests", "40", "--clients", "4", "--warmup", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "40 requests answered, 0 errors" in run.stdout
    refused = subprocess.run([*script, "--url", "http://example.com:8000"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "refusing" in refused.stderr


def test_parse_request_normalizes_and_counts_tokens():
    limits = Limits(max_tokens=12, max_n_best=2)
    request = parse_request(b'[{"text": "Hello there. Bye."}, {"tokens": ["a", "b"], "n_best": 2}]', limits)
    assert request.is_list and [item.input for item in request.items] == ["Hello there. Bye.", ["a", "b"]]
    assert request.items[1].n_best == 2 and not request.items[0].marginals
    with pytest.raises(RequestError, match="more than 12 tokens") as err:
        parse_request([{"text": "Hello there. Bye."}] * 3, limits)  # 5 tokens each
    assert err.value.status == 413
    features = Limits(num_features=1)
    with pytest.raises(RequestError, match="raw text does not have"):
        parse_request({"text": "Hello"}, features)
    with pytest.raises(RequestError, match="1 lists of 2 strings"):
        parse_request({"tokens": ["a", "b"], "features": [["NN"]]}, features)
    assert parse_request({"tokens": ["a", "b"], "features": [["DT", "NN"]]}, features).items[0].features == [
        ["DT", "NN"]
    ]


def test_a_model_folder_serves_as_its_checkpoint(checkpoint, tagger, tmp_path):
    folder = tagger.save_pretrained(tmp_path / "folder")
    records = load_tagger(str(folder)).predict(TEXT, n_best=2)
    assert records == load_tagger(str(checkpoint)).predict(TEXT, n_best=2)


def test_serve_refuses_a_missing_model_and_another_host(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt: not a model folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "nope.ckpt"), "--host", "10.1.2.3"]) == 2
    assert "--host should be" in capsys.readouterr().err
