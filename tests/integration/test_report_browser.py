"""Job reports and the jobs page in a real headless Chromium, driven over the DevTools protocol.

Real parts only: jobs run through a real ``voicegender worker`` process on
the embedded default (SQLite + filesystem broker), the page is served by a
real ``voicegender api`` process, and Chromium loads them as a person would.
The browser records console messages, exceptions, network requests and
JavaScript dialogs, so "no errors", "no requests" and "no alert" are measured.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from classifier.synthetic import write_labelled_folder
from voicegender.processes import stop_process

from .conftest import REPO, JobTable, free_port, running_worker, wait_until

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"),
]
EVIL_NAME = "<script>alert(1)</script>.wav"  # a folder "<script>alert(1)<" holding "script>.wav"
FINAL_STATES = {"done", "done_with_errors", "failed", "cancelled"}
TOKEN = "page-test-token"
JOB_TIMEOUT_S = 900  # generous: on a busy two-core machine a niced test gets a small share of a core


# --- a browser over the DevTools protocol ------------------------------------------------------


@dataclass
class Chromium:
    """One headless page; every protocol event it sends is kept in ``events``."""

    proc: subprocess.Popen
    ws: object
    events: list[dict] = field(default_factory=list)
    _next_id: int = 0

    def send(self, method: str, timeout_s: float = 120, **params) -> dict:
        self._next_id += 1
        call_id = self._next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self._receive(deadline - time.monotonic())
            if message is not None and message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(f"no answer to {method} within {timeout_s} s")

    def _receive(self, timeout_s: float) -> dict | None:
        import websocket

        self.ws.settimeout(max(0.01, timeout_s))
        try:
            message = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Page.javascriptDialogOpening":  # never leave the page blocked
                self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog", "params": {"accept": False}}))
        return message

    def pump(self, seconds: float) -> None:
        """Take in events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())

    def navigate(self, url: str, timeout_s: float = 120) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired", timeout_s=timeout_s)

    def wait_for_event(self, method: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event["method"] == method:
                    return event
            self._receive(min(0.5, deadline - time.monotonic()))
        raise TimeoutError(f"no {method} within {timeout_s} s")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(data)
        return data

    def set_files(self, selector: str, paths: list[Path]) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    # What the page did, from the recorded events.
    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(json.dumps(p["args"])[:500])
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def dialogs(self) -> list[str]:
        return [e["params"]["message"] for e in self.events if e["method"] == "Page.javascriptDialogOpening"]


def devtools_page_url(port: int) -> str | None:
    """The first page's DevTools socket; None until Chromium has opened it (shortly after its port file)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
        targets = json.load(r)
    return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    import websocket

    profile = Path(tempfile.mkdtemp(prefix="vg-chromium-"))
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
         "--window-size=1280,900", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.is_file() and port_file.read_text().strip(), timeout_s=120, what="Chromium's DevTools port")
        port = int(port_file.read_text().split()[0])
        page_url = wait_until(lambda: devtools_page_url(port), timeout_s=60, interval_s=0.2, what="Chromium's first page")
        ws = websocket.create_connection(page_url, timeout=60, suppress_origin=True)
        chrome = Chromium(proc=proc, ws=ws)
        for domain in ("Page", "Runtime", "Network", "Log", "DOM"):
            chrome.send(f"{domain}.enable")
        yield chrome
        ws.close()
    finally:
        stop_process(proc, timeout_s=10)
        shutil.rmtree(profile, ignore_errors=True)


# --- jobs run by a real worker -----------------------------------------------------------------


def env_for(data_dir: Path, model: Path, **extra: object) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    values = {"data_dir": data_dir, "model_path": model, "chunk_size": 4, "sweep_interval_s": 1, "heartbeat_s": 0.5, **extra}
    env.update({f"VOICEGENDER_{k.upper()}": str(v) for k, v in values.items()})
    return env


@dataclass
class FinishedJobs:
    labelled: dict  # the jobs table's row
    unlabelled: dict
    results: dict[str, list[dict]]  # per job, db.jobs.job_results rows (what `voicegender results` prints)


def submit_in_process(env: dict[str, str], folders: list[Path]) -> list[str]:
    """The real submit path (copy, hash, label, one transaction, enqueue) without a process start per job."""
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings
    from worker.submit import submit_folder

    settings = Settings(**{k.removeprefix("VOICEGENDER_").lower(): v for k, v in env.items() if k.startswith("VOICEGENDER_")})
    services = build_services(settings)
    ids = [submit_folder(settings, services.sessions, services.app, folder)[0].id for folder in folders]
    services.app.close()
    return ids


def wait_for_jobs(table: JobTable, ids: list[str], worker, *, timeout_s: float) -> list[dict]:
    """Poll the job table (cheap: no process start) until every job is final."""

    def all_final():
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited:\n{worker.log_tail()}")
        rows = [table.job(job_id) for job_id in ids]
        return rows if all(r["state"] in FINAL_STATES for r in rows) else None

    return wait_until(all_final, timeout_s=timeout_s, interval_s=0.5, what=f"jobs {ids} to finish")


@pytest.fixture(scope="module")
def finished_jobs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[FinishedJobs]:
    """A labelled job (with a file named like a script tag and a broken file) and an unlabelled one, both finished."""
    from db.jobs import job_results
    from db.session import create_db_engine, make_session_factory

    root = tmp_path_factory.mktemp("report-jobs")
    labelled = write_labelled_folder(root / "labelled", n_clips=20, sr=16000, seed=21)  # 20: enough for the deletion check
    first = sorted(labelled.glob("*.wav"))[0]
    (labelled / EVIL_NAME).parent.mkdir()
    shutil.copy(first, labelled / EVIL_NAME)
    (labelled / "broken_female.wav").write_bytes(b"RIFF\x00\x01\x00\x00WAVEnot really")
    unlabelled = root / "unlabelled"
    unlabelled.mkdir()
    for i, wav in enumerate(sorted(labelled.glob("clip_*.wav"))[:5]):
        shutil.copy(wav, unlabelled / f"recording_{i}.wav")  # no label token, no labels.csv
    env = env_for(root / "data", tiny_model)
    ids = submit_in_process(env, [labelled, unlabelled])
    table = JobTable(root / "data")
    with running_worker(env, root / "worker.log") as w:
        rows = wait_for_jobs(table, ids, w, timeout_s=JOB_TIMEOUT_S)
    sessions = make_session_factory(create_db_engine(f"sqlite:///{root / 'data' / 'voicegender.db'}"))
    with sessions() as session:
        results = {job_id: job_results(session, job_id) for job_id in ids}
    yield FinishedJobs(labelled=rows[0], unlabelled=rows[1], results=results)
    table.engine.dispose()


def open_report(browser: Chromium, report: Path) -> None:
    browser.navigate(report.as_uri())
    browser.pump(1.0)  # late console messages, if any


def image_states(browser: Chromium) -> list[dict]:
    return browser.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"
    )


# --- the tests ---------------------------------------------------------------------------------


def test_labelled_report_renders_offline_with_numbers_from_the_results(browser: Chromium, finished_jobs: FinishedJobs, tmp_path: Path):
    job = finished_jobs.labelled
    rows = finished_jobs.results[job["id"]]
    assert job["state"] == "done_with_errors" and sum(bool(r["error"]) for r in rows) == 1, job
    report = Path(job["report_path"])
    open_report(browser, report)

    shot = browser.screenshot(tmp_path / "labelled-report.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000
    assert browser.console_errors() == []
    assert [u for u in browser.requested_urls() if not u.startswith("data:")] == [report.as_uri()]

    images = image_states(browser)
    expected = {"confusion matrix", "prediction counts", "confidence histogram", "mean GradCAM per predicted class", "attention profile", "deletion check"}
    assert expected <= {i["alt"] for i in images}
    assert all(i["complete"] and i["width"] > 0 for i in images), images
    assert sum(i["alt"].startswith("GradCAM overlay") for i in images) >= 3
    assert browser.evaluate("document.querySelectorAll('#examples audio').length") >= 3

    scored = [r for r in rows if r["label"] in ("female", "male") and r["prediction"] in ("female", "male")]
    expected_cm = {f"{t}/{p}": sum(r["label"] == t and r["prediction"] == p for r in scored) for t in ("female", "male") for p in ("female", "male")}
    shown_cm = browser.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#confusion td[data-true]'))"
        ".map(td => [td.dataset.true + '/' + td.dataset.pred, Number(td.textContent)]))"
    )
    assert shown_cm == expected_cm and sum(expected_cm.values()) == 20
    accuracy = (expected_cm["female/female"] + expected_cm["male/male"]) / 20
    assert browser.evaluate("document.getElementById('accuracy').textContent") == f"{accuracy:.4f}"
    assert browser.evaluate("document.querySelectorAll('#files tbody tr').length") == len(rows) == 22
    # Misclassified files come first.
    wrong = sum(1 for r in scored if r["label"] != r["prediction"])
    classes = browser.evaluate("Array.from(document.querySelectorAll('#files tbody tr')).map(r => r.className)")
    assert classes[:wrong] == ["wrong"] * wrong and "wrong" not in classes[wrong:]


def test_script_tag_file_name_is_text_and_runs_nothing(browser: Chromium, finished_jobs: FinishedJobs):
    open_report(browser, Path(finished_jobs.labelled["report_path"]))
    assert browser.dialogs() == []
    assert browser.evaluate("document.querySelectorAll('script').length") == 1  # the report's own
    cells = browser.evaluate("Array.from(document.querySelectorAll('#files tbody td:first-child')).map(td => td.textContent)")
    assert EVIL_NAME in cells


def test_table_sorts_and_filters_in_the_page(browser: Chromium, finished_jobs: FinishedJobs):
    open_report(browser, Path(finished_jobs.labelled["report_path"]))
    browser.evaluate("document.querySelector('#files th[data-key=\"2\"]').click()")  # p_female, ascending
    values = browser.evaluate(
        "Array.from(document.querySelectorAll('#files tbody tr')).map(r => r.cells[2].textContent).filter(t => t !== '').map(Number)"
    )
    assert values == sorted(values) and len(values) == 21
    browser.evaluate(
        "(() => { const s = document.getElementById('filter-only'); s.value = 'failed'; s.dispatchEvent(new Event('change')); })()"
    )
    visible = browser.evaluate("Array.from(document.querySelectorAll('#files tbody tr')).filter(r => !r.hidden).map(r => r.cells[0].textContent)")
    assert visible == ["broken_female.wav"]
    assert browser.evaluate("document.getElementById('shown').textContent") == "1"
    assert browser.console_errors() == []


def test_unlabelled_report_has_no_labelled_sections_and_says_why(browser: Chromium, finished_jobs: FinishedJobs):
    job = finished_jobs.unlabelled
    assert (job["state"], job["total"], job["label_source"]) == ("done", 5, None), job
    assert all(r["prediction"] and not r["label"] for r in finished_jobs.results[job["id"]])
    open_report(browser, Path(job["report_path"]))
    assert browser.console_errors() == []
    assert browser.evaluate("document.getElementById('confusion') === null && document.getElementById('labelled') === null")
    why = browser.evaluate("document.getElementById('no-labels').textContent")
    assert "none of these files came with a true label" in why
    images = image_states(browser)
    assert {"prediction counts", "confidence histogram", "attention profile"} <= {i["alt"] for i in images}
    assert "deletion check" not in {i["alt"] for i in images}
    assert browser.evaluate("document.getElementById('faithfulness-note').textContent").endswith("this job has 5.")
    assert all(i["complete"] and i["width"] > 0 for i in images), images


# --- the jobs page -----------------------------------------------------------------------------


@pytest.fixture
def api_server(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``voicegender api`` on a free port with a bearer token; yields its URL and environment."""
    env = env_for(tmp_path / "data", tiny_model, api_token=TOKEN, chunk_size=2)
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "voicegender", "api", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"api exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, timeout_s=300, interval_s=0.3, what="the API to answer")
        yield url, env
    finally:
        stop_process(proc, timeout_s=15)


def row_state(browser: Chromium, job_id: str) -> dict | None:
    return browser.evaluate(
        f"(() => {{ const r = document.querySelector('tr[data-job-id=\"{job_id}\"]'); if (!r) return null;"
        " return {state: r.querySelector('.state').textContent, progress: r.querySelector('.progress-text').textContent,"
        " report: !!r.querySelector('a.report')}; })()"
    )


def test_jobs_page_submits_a_job_and_follows_it_to_its_report(browser: Chromium, api_server, tmp_path: Path):
    url, env = api_server
    folder = write_labelled_folder(tmp_path / "upload", n_clips=6, sr=16000, seed=22)
    browser.navigate(url + "/")
    assert browser.evaluate("document.querySelectorAll('#jobs tbody tr[data-job-id]').length") == 0
    browser.set_files("#upload-files", sorted(folder.glob("*.wav")))

    # Without the token the server refuses, and the page says so.
    browser.evaluate("document.querySelector('#upload-token').removeAttribute('required'); document.querySelector('#upload button').click()")
    wait_until(lambda: "upload failed: 401" in browser.evaluate("document.getElementById('upload-message').textContent"),
               timeout_s=120, what="the 401 message")
    browser.events.clear()  # Chromium logs the refused request as a console error; from here on there must be none
    browser.evaluate(f"document.getElementById('upload-token').value = '{TOKEN}'; document.querySelector('#upload button').click()")
    message = wait_until(
        lambda: (m := browser.evaluate("document.getElementById('upload-message').textContent")).startswith("job ") and m,
        timeout_s=300, what="the job to be created",
    )
    job_id = message.split()[1]
    assert message.endswith("created with 6 file(s)")
    first = wait_until(lambda: row_state(browser, job_id), timeout_s=120, what="the new job's row")
    assert first["progress"] == "0 / 6" and first["state"] == "queued" and not first["report"]

    seen = [first["progress"]]
    with running_worker(env, tmp_path / "worker.log") as w:  # started only now: the page must show the job advance
        def finished():
            if w.proc.poll() is not None:
                pytest.fail(f"worker exited:\n{w.log_tail()}")
            state = row_state(browser, job_id)
            seen.append(state["progress"])
            return state if state["state"] in FINAL_STATES and state["report"] else None

        final = wait_until(finished, timeout_s=JOB_TIMEOUT_S, interval_s=0.3, what="the page to show the job finished")
    assert (final["state"], final["progress"]) == ("done", "6 / 6"), final
    done_counts = [int(p.split(" / ")[0]) for p in seen]
    assert done_counts == sorted(done_counts) and done_counts[0] == 0 and done_counts[-1] == 6
    assert browser.console_errors() == []

    browser.events.clear()
    browser.evaluate(f"document.querySelector('tr[data-job-id=\"{job_id}\"] a.report').click()")
    browser.wait_for_event("Page.loadEventFired", timeout_s=120)
    assert browser.evaluate("location.pathname") == f"/jobs/{job_id}/report"
    assert job_id in browser.evaluate("document.title")
    images = image_states(browser)
    assert images and all(i["complete"] and i["width"] > 0 for i in images), images
    assert browser.evaluate("document.querySelectorAll('#files tbody tr').length") == 6
