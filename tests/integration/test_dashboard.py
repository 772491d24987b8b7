"""The live dashboard (``GET /`` of the HTTP output) in a real headless Chromium, against a real daemon.

Each daemon replays the demo session in real time (about 8 s of decisions) with
``--http`` and ``--jsonl``; the page's DOM is checked against the decisions the
daemon wrote, the same ones it sent on /ws (matched by their ``t``).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_checks import wait_until
from edge_mer.pipeline.session_run import demo_session_path

pytest.importorskip("aiohttp", reason="the HTTP output needs aiohttp (pip install aiohttp)")
pytest.importorskip("prometheus_client", reason="the HTTP output needs prometheus-client")
webdriver = pytest.importorskip("selenium.webdriver", reason="the dashboard test needs selenium (pip install selenium)")

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="the dashboard test needs chromium and chromedriver on PATH "
                                       "(Debian: apt-get install chromium chromium-driver)")

TOKEN = "dashboard-test-token-0123456789"
# One consistent read of everything the page shows (ids and data- attributes are the page's stable API).
SNAPSHOT_JS = """
const $ = (id) => document.getElementById(id);
const rows = {};
for (const tr of document.querySelectorAll('#modalities tr[data-modality]')) {
  rows[tr.dataset.modality] = {valid: tr.dataset.valid === 'true', reason: tr.cells[3].textContent,
                               age: tr.cells[4].textContent};
}
return {t: $('decision').dataset.t, label: $('label').textContent, valence: $('valence').textContent,
        arousal: $('arousal').textContent, cx: $('va-point').getAttribute('cx'),
        cy: $('va-point').getAttribute('cy'), modalities: rows, faces: Number($('faces').dataset.count),
        boxes: document.querySelectorAll('#faces rect.face-box').length, status: $('status').dataset.state,
        health: $('health').dataset.status, tokenForm: getComputedStyle($('token-form')).display !== 'none',
        points: Number($('probs-chart').dataset.points || 0),
        uncertainty: $('uncertainty').hidden ? null : $('uncertainty').textContent,
        labelsActive: $('labels-active').hidden ? null : $('labels-active').textContent};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (4xx/5xx included); raises URLError while nothing listens."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _start_daemon(port: int, jsonl: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A daemon replaying the demo session in real time with the HTTP output on ``port``; returns once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(demo_session_path()),
                             "--http", "--http-port", str(port), "--jsonl", str(jsonl), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {proc.returncode} before serving")
        try:
            _status(f"http://127.0.0.1:{port}/healthz")
            return proc
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the daemon's HTTP output never answered")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _sent(jsonl: Path, t: str) -> dict[str, Any] | None:
    """The decision with time ``t`` (as the page shows it) that the daemon wrote, or None (yet)."""
    if not t or not jsonl.exists():
        return None
    lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return next((d for d in lines if abs(d["t"] - float(t)) < 1e-9), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as exc:
        pytest.skip(f"headless chromium would not start: {exc.msg}")
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


def snapshot(driver: Any) -> dict[str, Any]:
    """Everything the page shows now."""
    return driver.execute_script(SNAPSHOT_JS)


def _check_against_sent(shown: dict[str, Any], jsonl: Path) -> dict[str, Any]:
    """The shown decision is one the daemon sent, shown as sent; returns that decision."""
    sent = wait_until(lambda: _sent(jsonl, shown["t"]), f"decision t={shown['t']} in the JSON lines output", 5)
    assert shown["label"] == sent["label"]
    assert shown["valence"] == f"{sent['valence']:.3f}" and shown["arousal"] == f"{sent['arousal']:.3f}"
    assert float(shown["cx"]) == pytest.approx(max(-1, min(1, sent["valence"])) * 100, abs=1e-6)
    assert float(shown["cy"]) == pytest.approx(-max(-1, min(1, sent["arousal"])) * 100, abs=1e-6)
    assert {m: r["valid"] for m, r in shown["modalities"].items()} == \
        {m: r["valid"] for m, r in sent["modalities"].items()}
    assert {m: r["reason"] for m, r in shown["modalities"].items()} == \
        {m: r["reason"] or "" for m, r in sent["modalities"].items()}
    assert shown["faces"] == shown["boxes"] == len(sent["faces"])
    return sent


def test_dashboard_shows_the_stream_and_reconnects(browser: Any, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    first = _start_daemon(port, tmp_path / "first.jsonl")
    try:
        browser.get(url)
        shown = wait_until(lambda: (s := snapshot(browser))["label"] not in ("", "-") and s, "a label on the page")
        assert shown["status"] == "live" and not shown["tokenForm"]
        sent = _check_against_sent(shown, tmp_path / "first.jsonl")
        assert sent["faces"], "the demo session has a face in view"
        health = wait_until(lambda: snapshot(browser)["health"] in ("ok", "degraded") and snapshot(browser),
                       "the health from /healthz", 5)
        assert all(r["age"].endswith(" s") for r in health["modalities"].values()), health["modalities"]
        wait_until(lambda: snapshot(browser)["points"] >= 5, "five decisions in the chart", 5)
        png = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    finally:
        _stop(first)
    wait_until(lambda: snapshot(browser)["status"] == "reconnecting", "'reconnecting' after the daemon stopped", 5)
    assert "reconnecting" in browser.find_element(By.ID, "status").text
    before = snapshot(browser)["t"]
    second = _start_daemon(port, tmp_path / "second.jsonl")
    try:
        again = wait_until(lambda: (s := snapshot(browser))["status"] == "live" and s["t"] != before
                      and _sent(tmp_path / "second.jsonl", s["t"]) and s, "data again from the new daemon", 20)
        _check_against_sent(again, tmp_path / "second.jsonl")
    finally:
        _stop(second)


def test_dashboard_asks_for_the_token(browser: Any, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = _start_daemon(port, tmp_path / "out.jsonl", "--http-token", TOKEN)
    try:
        # The page itself holds no data and is public; the data and the JSON index of / are not.
        assert _status(f"{base}/", {"Accept": "text/html"}) == 200
        assert _status(f"{base}/") == _status(f"{base}/state") == 401
        browser.get(f"{base}/")
        browser.execute_script("sessionStorage.clear()")  # a fresh origin, but be sure: no stored token
        browser.refresh()
        wait_until(lambda: snapshot(browser)["tokenForm"], "the token form")
        time.sleep(1.0)  # decisions flow meanwhile: none may reach the page without the token
        locked = snapshot(browser)
        assert locked["status"] == "unauthorized" and locked["label"] == "-" and locked["t"] == ""
        browser.find_element(By.ID, "token-input").send_keys("wrong-token-0123456789")
        browser.find_element(By.ID, "token-submit").click()
        wait_until(lambda: browser.find_element(By.ID, "token-error").text == "token refused", "'token refused'", 5)
        assert snapshot(browser)["label"] == "-"
        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        browser.find_element(By.ID, "token-submit").click()
        shown = wait_until(lambda: (s := snapshot(browser))["label"] != "-" and s, "a label after entering the token")
        assert not shown["tokenForm"] and shown["status"] == "live"
        _check_against_sent(shown, tmp_path / "out.jsonl")
        assert browser.execute_script("return sessionStorage.getItem('edge-mer-token')") == TOKEN
    finally:
        _stop(daemon)


def test_dashboard_shows_uncertainty_and_active_labels_when_the_fusion_reports_them(browser: Any,
                                                                                    tmp_path: Path) -> None:
    port = _free_port()
    jsonl = tmp_path / "mc.jsonl"
    proc = _start_daemon(port, jsonl, "--fusion-rule", "monte_carlo")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        shown = wait_until(lambda: (s := snapshot(browser))["uncertainty"] and s, "the uncertainty line")
        sent = _check_against_sent(shown, jsonl)
        u = sent["uncertainty"]
        assert shown["uncertainty"] == (f"uncertainty: entropy {u['entropy']:.3f} nats \u00b7 agreement "
                                        f"{u['agreement']:.3f} \u00b7 {round(u['level'] * 100)}% interval "
                                        f"[{u['interval'][0]:.3f}, {u['interval'][1]:.3f}]")
        assert shown["labelsActive"] is None  # no multi-label head in this run
    finally:
        _stop(proc)
    port = _free_port()
    jsonl = tmp_path / "compound.jsonl"
    proc = _start_daemon(port, jsonl, "--fusion-head", "compound")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        shown = wait_until(lambda: (s := snapshot(browser))["labelsActive"] and s["label"] not in ("", "-") and s,
                           "the active labels line")
        sent = _check_against_sent(shown, jsonl)
        names = sorted(sent["labels_active"].items(), key=lambda kv: -kv[1])
        expected = ", ".join(f"{k} {v:.3f}" for k, v in names) or "none"
        assert shown["labelsActive"] == f"active labels: {expected}" and shown["uncertainty"] is None
    finally:
        _stop(proc)
