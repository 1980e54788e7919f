"""The inspector server (`mmboundary.serve`, `mmboundary serve`): the ask API cross-checked with
`api.ask`, bad uploads (4xx naming the problem, the server keeps serving), the busy answer, the
results browser's data on hand-made evaluate files, the loopback default and Host check, and 50
concurrent requests against a real uvicorn server in a subprocess (all answered 200 or 503 busy,
memory bounded).

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_serve.py

The tiny run (a random tiny VLM as vanilla and SFT model, hand-made normaliser and levels) is
conftest's `tiny_run` (`_helpers.build_tiny_run`, as for tests/test_api.py and tests/test_browser.py);
the results files, `post_ask` and the subprocess `Server` are in tests/_helpers.py (test_browser uses
them too).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _helpers import QUESTION, Server, post_ask, write_results
from mmboundary.serve import LEVEL_COLOURS, ServeSettings, create_app, is_loopback

STATIC = Path(__file__).resolve().parents[1] / "src" / "mmboundary" / "serve" / "static"


# --- the app on conftest's tiny run -----------------------------------------------------------------

def png_bytes(size=(24, 24), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tiny_run):
    from mmboundary.api import load

    return load(tiny_run.root)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, settings=ServeSettings(max_upload_mb=1.0, max_queue=2))) as c:
        yield c


def _ask(client, image: bytes | None, question=QUESTION, choices=(), name="scene.png",
         **data):
    files = {"image": (name, image, "image/png")} if image is not None else None
    form = {"question": question, "choice": list(choices), **data}
    return client.post("/api/ask", data=form, files=files)


# --- asking ---------------------------------------------------------------------------------------

def test_ask_gives_the_steps_of_the_python_api(client, model, tiny_run):
    image = Path(tiny_run.examples[0].image)
    r = _ask(client, image.read_bytes(), choices=["1", "2", "3"])
    assert r.status_code == 200, r.text
    expected = model.ask(image, QUESTION, ["1", "2", "3"]).model_dump(mode="json")
    assert r.json() == expected
    assert expected["steps"] and expected["model"] == "sft" and expected["choices"] == ["1", "2", "3"]
    assert all(s["internal_level"] in (1, 2, 3, 4, 5) for s in expected["steps"])  # the run's levels
    # without choices, and a JPEG of the same picture: an answer of the same shape
    buf = io.BytesIO()
    with Image.open(image) as im:
        im.convert("RGB").save(buf, format="JPEG", quality=95)
    r = _ask(client, buf.getvalue(), name="scene.jpg")
    assert r.status_code == 200 and r.json()["choices"] is None


def _truncated_png() -> bytes:
    data = png_bytes((64, 64))
    return data[: len(data) // 2]


def _ico() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")
    return buf.getvalue()


def _huge_png() -> bytes:  # 7000 x 6000 = 42 MP, over the 40 MP limit; compresses to a few kB
    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


BAD = {
    "not an image": (lambda: b"hello, I am a text file\n" * 10, {}, 415, "bad_image", "notes.txt: not an image"),
    "truncated png": (_truncated_png, {}, 400, "bad_image", "corrupt or truncated image"),
    "empty file": (lambda: b"", {}, 400, "bad_image", "the uploaded file is empty"),
    "unsupported format": (_ico, {}, 415, "bad_image", "unsupported image format ICO"),
    "too many pixels": (_huge_png, {}, 413, "bad_image", "image too large: 7000x6000"),
    "too many bytes": (lambda: png_bytes() + b"\0" * (1024 * 1024 + 100_000), {}, 413, "too_large",
                       "over the limit of 1 MiB"),
    "empty question": (png_bytes, {"question": "   "}, 400, "bad_question", "the question is empty"),
    "long question": (png_bytes, {"question": "why " * 300}, 400, "bad_question", "over the limit of 1000"),
    "no image": (lambda: None, {}, 400, "bad_image", "no image file uploaded"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_upload_is_a_4xx_naming_the_problem_and_the_server_keeps_serving(client, case, tiny_run):
    make, extra, status, code, message = BAD[case]
    name = "notes.txt" if case == "not an image" else "upload.png"
    r = _ask(client, make(), name=name, **extra)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and message in body["message"], body
    assert "/tmp" not in body["message"]  # the server's temporary path is never shown
    ok = _ask(client, Path(tiny_run.examples[0].image).read_bytes())
    assert ok.status_code == 200 and ok.json()["steps"]
    assert client.get("/healthz").json()["admitted"] == 0  # every request left the queue


def test_a_body_growing_past_the_limit_without_content_length_is_cut_off(model):
    """The size check while reading (no Content-Length, as with chunked uploads): 413."""
    app = create_app(model, settings=ServeSettings(max_upload_mb=0.05))
    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    chunks = [head] + [b"\0" * 16384] * 20 + [f"\r\n--{boundary}--\r\n".encode()]
    sent = []

    async def go():
        queue = list(chunks)

        async def receive():
            if not queue:
                return {"type": "http.disconnect"}
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/api/ask", "raw_path": b"/api/ask", "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1"),
                             (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
        await app(scope, receive, send)
        return queue

    left = asyncio.run(go())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 413 and body["error"] == "too_large"
    assert left  # reading stopped at the limit: the rest of the body was never read


class _Blocking:
    """A stand-in model whose `ask` waits until released (to fill the queue)."""

    name, path, statements, internal_available, run_root = "stub", "stub", True, False, None

    def __init__(self, answer):
        self.answer = answer
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0
        self.active = 0
        self.most_active = 0

    def ask(self, image, question, choices=None, correct=False):
        self.calls += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.entered.release()
        self.release.wait(30)
        self.active -= 1
        return self.answer


def _stub_answer():
    from mmboundary.api import Answer, Step

    return Answer(question=QUESTION, model="stub", text="There are 2 circles, I am sure. So the answer is 2.",
                  steps=(Step(index=0, text="There are 2 circles.", statement="I am sure", expressed_level=5,
                              internal_level=2),), answer="2", statements=True, internal_available=True)


def test_beyond_the_queue_requests_get_503_busy_with_retry_after():
    stub = _Blocking(_stub_answer())
    app = create_app(stub, settings=ServeSettings(max_queue=1, retry_after_s=7))
    results = []
    with TestClient(app) as client:
        def one():
            results.append(_ask(client, png_bytes()))

        first = threading.Thread(target=one)
        first.start()
        assert stub.entered.acquire(timeout=20)  # the first request is inside the model
        second = threading.Thread(target=one)
        second.start()
        deadline = time.time() + 20
        while client.get("/healthz").json()["admitted"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        busy = _ask(client, png_bytes())  # capacity 1 + 1 in use: refused at once
        assert busy.status_code == 503 and busy.json()["error"] == "busy"
        assert busy.headers["retry-after"] == "7"
        stub.release.set()
        first.join(30)
        second.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert results[0].json()["steps"][0]["expressed_level"] == 5
        assert stub.most_active == 1  # one inference at a time
        health = client.get("/healthz").json()
        assert (health["admitted"], health["served"], health["rejected_busy"]) == (0, 2, 1)


# --- the results browser --------------------------------------------------------------------------

@pytest.fixture()
def results_run(tmp_path):
    return write_results(tmp_path)


def test_results_browser_sorts_examples_by_calibration_error(results_run):
    stub = _Blocking(_stub_answer())
    with TestClient(create_app(stub, results_root=results_run)) as client:
        summary = client.get("/api/results").json()
        assert summary["models"] == ["sft", "vanilla"] and summary["splits"] == ["test"]
        assert not summary["complete"]  # no COMPLETE marker: shown as partial
        rows = {r["model"]: r for r in summary["table"]}
        assert set(rows) == {"sft", "vanilla"}  # the signals entry is not a model row
        assert (rows["sft"]["source"], rows["sft"]["ece"], rows["sft"]["mece"], rows["sft"]["f1"]) == \
            ("expressed", 0.25, 0.125, 0.6)
        assert (rows["vanilla"]["source"], rows["vanilla"]["ece"]) == ("internal", 0.5)

        data = client.get("/api/results/examples", params={"split": "test", "model": "sft"}).json()
        assert data["source"] == "expressed" and data["total"] == 4
        assert [e["example_id"] for e in data["examples"]] == ["a", "c", "b", "d"]
        assert [e["error"] for e in data["examples"]][:3] == pytest.approx([0.9, 0.7, 0.3])
        assert data["examples"][-1]["error"] is None
        assert [s["level"] for s in data["examples"][2]["steps"]] == [3, 1]
        # level filter: examples with a step at that level
        lv1 = client.get("/api/results/examples", params={"split": "test", "model": "sft", "level": 1}).json()
        assert [e["example_id"] for e in lv1["examples"]] == ["b"]
        # paging
        page = client.get("/api/results/examples", params={"split": "test", "model": "sft", "limit": 2,
                                                           "offset": 1}).json()
        assert [e["example_id"] for e in page["examples"]] == ["c", "b"] and page["total"] == 4
        # the vanilla model is shown with its internal levels from the estimate stage
        van = client.get("/api/results/examples", params={"split": "test", "model": "vanilla"}).json()
        assert van["source"] == "internal"
        assert [(e["example_id"], e["error"]) for e in van["examples"]] == [("b", pytest.approx(0.9)),
                                                                            ("a", pytest.approx(0.2))]
        assert [s["level"] for s in van["examples"][1]["steps"]] == [5, 4]

        names = [f["name"] for f in summary["figures"]]
        assert names == ["reliability_sft_test.png", "reliability_vanilla_test.png"]
        png = client.get("/api/results/figure/reliability_sft_test.png")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.headers["content-type"] == "image/png"
        for bad in ("metrics.json", "..%2Fmetrics.json", "reliability_rl_test.png"):
            assert client.get(f"/api/results/figure/{bad}").status_code == 404
        assert client.get("/api/results/examples", params={"split": "test", "model": "rl"}).status_code == 404
        assert client.get("/api/results/examples", params={"split": "test", "model": "sft", "level": 7}
                          ).status_code == 422
        assert client.get("/api/results/image", params={"split": "test", "id": "a"}).status_code == 404
        for page_path in ("/", "/results"):
            page = client.get(page_path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_results_browser_names_a_broken_results_file(results_run):
    (results_run / "evaluate" / "metrics.json").write_text("{not json")
    (results_run / "evaluate" / "chains_rl_test.jsonl").write_text('{"example_id": 3}\n')
    with TestClient(create_app(_Blocking(_stub_answer()), results_root=results_run)) as client:
        r = client.get("/api/results")
        assert r.status_code == 500 and r.json()["error"] == "bad_results"
        assert "metrics.json: unreadable metrics" in r.json()["message"]
        (results_run / "evaluate" / "metrics.json").write_text("{}")
        assert client.get("/api/results").status_code == 200
        r = client.get("/api/results/examples", params={"split": "test", "model": "rl"})
        assert r.status_code == 500 and "chains_rl_test.jsonl: unreadable chains" in r.json()["message"]
        assert client.get("/api/results/examples", params={"split": "test", "model": "sft"}).status_code == 200


def test_results_browser_without_a_run_says_so():
    stub = _Blocking(_stub_answer())
    with TestClient(create_app(stub)) as client:
        r = client.get("/api/results")
        assert r.status_code == 404 and r.json()["error"] == "no_results"


# --- safety ---------------------------------------------------------------------------------------

def test_the_default_bind_is_loopback(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import mmboundary.serve.server as server
    from mmboundary.cli import app

    calls = []
    monkeypatch.setattr(server, "serve", lambda model, **kw: calls.append(kw))
    assert CliRunner().invoke(app, ["serve", "--model", str(tmp_path)]).exit_code == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["max_upload_mb"] == 8.0 and calls[-1]["max_queue"] == 8
    assert CliRunner().invoke(app, ["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]).exit_code == 0
    assert calls[-1]["host"] == "0.0.0.0"

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "example.org"))


def test_serve_hands_uvicorn_the_host_and_warns_off_loopback(monkeypatch, tmp_path, capsys):
    import uvicorn

    from mmboundary.serve import server

    runs = []
    monkeypatch.setattr(server, "load", lambda *a, **kw: _Blocking(_stub_answer()))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    server.serve(tmp_path, host="0.0.0.0", port=1234)
    assert runs[-1]["host"] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0, not a loopback address" in capsys.readouterr().err
    server.serve(tmp_path, port=1234)  # the default: loopback, no warning
    assert runs[-1]["host"] == "127.0.0.1" and runs[-1]["port"] == 1234
    assert "warning" not in capsys.readouterr().err


def test_host_header_check_and_security_headers():
    with TestClient(create_app(_Blocking(_stub_answer()))) as client:
        ok = client.get("/healthz")
        assert ok.status_code == 200
        assert "script-src 'self'" in ok.headers["content-security-policy"]
        assert ok.headers["x-content-type-options"] == "nosniff"
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200
        evil = client.get("/healthz", headers={"host": "evil.example:8000"})
        assert evil.status_code == 421 and evil.json()["error"] == "bad_host"
    # bound to another address: any Host
    with TestClient(create_app(_Blocking(_stub_answer()), settings=ServeSettings(loopback=False))) as client:
        assert client.get("/healthz", headers={"host": "evil.example"}).status_code == 200


def test_the_page_puts_text_in_as_text_and_has_no_external_assets(client):
    for name in ("ask.js", "results.js"):
        js = (STATIC / name).read_text()
        assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js
        assert "document.write" not in js and "eval(" not in js
    for name in ("index.html", "results.html", "inspector.css", "ask.js", "results.js"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    css = client.get("/levels.css").text
    for level, colour in LEVEL_COLOURS.items():
        assert f".level-{level} {{ background: {colour}; }}" in css


# --- a real server under load ---------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory and sockets from /proc (Linux)")
def test_fifty_concurrent_requests_on_loopback(tiny_run):
    image = Path(tiny_run.examples[0].image).read_bytes()
    t0 = time.time()
    with Server(tiny_run.root, "--max-queue", "8") as server:
        assert server.listening_addresses() == {"0100007F"}  # 127.0.0.1 only
        status, _, first = post_ask(server.base, image)  # warm-up: the first inference allocates
        assert status == 200 and first["steps"]
        before = rss_mb(server.proc.pid)
        statuses: list[int] = []
        errors: list[BaseException] = []
        peak = before
        for burst in range(3):
            barrier = threading.Barrier(50)
            results: list = []

            def one():
                barrier.wait()
                try:
                    results.append(post_ask(server.base, image))
                except BaseException as e:  # noqa: BLE001 - a connection error fails the test below
                    errors.append(e)

            threads = [threading.Thread(target=one) for _ in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            peak = max(peak, rss_mb(server.proc.pid))
            assert not errors, errors[:3]
            assert len(results) == 50
            for code, headers, body in results:
                assert code in (200, 503), (code, body)
                if code == 503:
                    assert body["error"] == "busy" and int(headers["retry-after"]) > 0
                else:
                    assert body["steps"] == first["steps"]  # greedy: the same chain every time
            statuses += [code for code, _, _ in results]
        after = rss_mb(server.proc.pid)
        health = json.loads(urllib.request.urlopen(server.base + "/healthz", timeout=5).read())
        assert post_ask(server.base, image)[0] == 200  # still serving
    served, busy = statuses.count(200), statuses.count(503)
    print(f"\n50 x 3 concurrent requests: {served} answered, {busy} busy; RSS {before:.0f} MB before, "
          f"{peak:.0f} MB peak, {after:.0f} MB after; {time.time() - t0:.1f} s")
    assert served >= 3 and served + busy == 150  # at least one answered per burst
    assert health["admitted"] == 0 and health["served"] == served + 1 and health["rejected_busy"] == busy
    assert after - before < 200 and peak - before < 200, (before, peak, after)
