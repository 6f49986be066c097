"""The operator console at `/`, in a real headless chromium against a real shim (with an API key) and the
session tritonserver: it asks for the key and keeps it in memory only, lists the status and the models, loads,
tries and unloads a model, and shows a label that is HTML as text, under the shim's Content-Security-Policy."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import requests

from testkit.api_shim_env import shim_env
from testkit.browser import Browser
from testkit.factories import OutputSpec, make_training_output, random_text
from testkit.shim_harness import ShimServer
from testkit.tolerance import assert_same_ranking
from testkit.triton_harness import REPO
from testkit.triton_tests_helpers import expected_rows

KEY = "console-key-for-tests"
HOSTILE_LABEL = "<img src=x onerror=alert(1)>"
MODEL = "console-hostile"
LABELS = [HOSTILE_LABEL, "positive", "negative"]
ARTIFACT = REPO / "var" / "test-artifacts" / "console.png"
LOAD_S = 60  # a Triton model load takes a few seconds on a small machine; a busy one may take longer
# Runs before the page's own script: any alert/confirm/prompt is also logged, besides the dialog event.
DIALOG_TRAP = """
for (const name of ["alert", "confirm", "prompt"]) {
  const original = window[name];
  window[name] = function (...args) { console.error("dialog called: " + name); return original.apply(this, args); };
}
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, triton):
    server = ShimServer(
        tmp_path_factory.mktemp("console"), {**shim_env(triton), "API_KEY": KEY, "GUNICORN_WORKERS": "1"}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hostile_model(triton_models_root, base_dir, keyed):
    """A real training output whose first label is HTML; unloaded and removed afterwards."""
    out = make_training_output(
        triton_models_root, MODEL, base_dir, OutputSpec(stem="hostile", label_names=LABELS, seed=51)
    )
    yield out
    for model_id in (MODEL, "alpha"):
        requests.post(
            f"{keyed.base}/inference/models/unload", json={"model_id": model_id}, headers={"X-API-Key": KEY}, timeout=60
        )
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def browser():
    with Browser(width=1280, height=1000) as driver:
        driver.send("Page.addScriptToEvaluateOnNewDocument", {"source": DIALOG_TRAP})
        yield driver


def js(value) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value)


def row(model_id: str, status: str = "loaded") -> str:
    return f"document.querySelector('tr[data-model-id={js(model_id)}][data-status={js(status)}]')"


def test_console_end_to_end(keyed, hostile_model, browser, triton_models_root, reference):
    browser.navigate(f"http://127.0.0.1:{keyed.port}/")

    # 1. Every API call answers 401: the page asks for the key in a password field; a wrong key is asked again.
    browser.wait_for("!document.getElementById('key-form').hidden", 20, "the page asks for the key")
    assert browser.evaluate("document.getElementById('api-key').type") == "password"
    assert browser.evaluate("document.querySelectorAll('tr[data-model-id]').length") == 0
    enter_key = "document.getElementById('api-key').value = {}; document.getElementById('api-key-submit').click()"
    browser.evaluate(enter_key.format(js("not-the-key")))
    browser.wait_for(
        "!document.getElementById('key-form').hidden"
        " && document.getElementById('key-note').textContent.includes('refused')",
        20,
        "a wrong key is refused and the key asked again",
    )
    browser.evaluate(enter_key.format(js(KEY)))
    browser.wait_for(
        "document.getElementById('key-form').hidden"
        " && document.getElementById('service-status').textContent === 'running'"
        f" && {row('alpha', 'unloaded')} !== null",
        20,
        "status and models shown once the key is given",
    )
    assert browser.evaluate("document.getElementById('pending-requests').textContent").isdigit()
    workers = browser.evaluate("Array.from(document.querySelectorAll('[data-worker-id]'), w => w.dataset.workerId)")
    assert workers == ["cpu-0", "cpu-1"]  # the session tritonserver runs 2 CPU instances
    assert browser.evaluate("document.querySelector('[data-worker-id] .bar > div').style.width").endswith("%")

    # 2. Load the hostile model through the form, and alpha through its row's button.
    browser.wait_for(f"{row(MODEL, 'unloaded')} !== null", 20, "the new training output listed")
    browser.evaluate(
        f"document.getElementById('load-dir').value = {js(MODEL)}; document.getElementById('load-button').click()"
    )
    browser.wait_for(f"{row(MODEL)} !== null", LOAD_S, f"{MODEL} listed as loaded")
    browser.evaluate(f"{row('alpha', 'unloaded')}.querySelector('button[data-action=load]').click()")
    browser.wait_for(f"{row('alpha')} !== null", LOAD_S, "alpha listed as loaded")

    # Its labels are shown as text: the HTML label is on the page literally and made no element.
    chips = browser.evaluate(f"Array.from({row(MODEL)}.querySelectorAll('.chip'), c => c.textContent)")
    assert chips == LABELS
    assert HOSTILE_LABEL in browser.evaluate("document.body.textContent")
    assert browser.evaluate("document.getElementsByTagName('img').length") == 0

    # 3. Try it: three texts, the top 3 labels and probabilities of each, as the reference computes them.
    rng = random.Random(16)
    texts = [random_text(rng, words) for words in (3, 8, 14)]
    browser.wait_for(
        f"Array.from(document.getElementById('predict-model').options, o => o.value).includes({js(MODEL)})", 20
    )
    browser.evaluate(
        f"document.getElementById('predict-model').value = {js(MODEL)};"
        f"document.getElementById('predict-texts').value = {js(chr(10).join(texts))};"
        "document.getElementById('predict-button').click()"
    )
    shown = browser.wait_for(
        "(() => { const blocks = document.querySelectorAll('#predict-result .prediction');"
        " return blocks.length === 3 && Array.from(blocks, b => ({"
        "  text: b.querySelector('.text').textContent,"
        "  top: Array.from(b.querySelectorAll('.top'), t => [t.querySelector('.label').textContent,"
        "                                                   Number(t.dataset.probability),"
        "                                                   t.querySelector('.probability').textContent])"
        " })); })()",
        30,
        "three predictions shown",
    )
    for text, block, expected in zip(texts, shown, expected_rows(reference, triton_models_root, MODEL, texts)):
        assert block["text"] == text
        top = [[label, probability] for label, probability, _ in block["top"]]
        want = sorted(expected.items(), key=lambda item: -item[1])
        assert_same_ranking(top, [list(pair) for pair in want], expected)
        assert [float(printed) for _, _, printed in block["top"]] == pytest.approx([p for _, p in top], abs=6e-5)
    assert browser.evaluate("document.getElementsByTagName('img').length") == 0
    # The model's traffic, from Triton's per-model counters, reaches its row: 1 request, 3 texts, 0 failures.
    browser.wait_for(
        f"Array.from({row(MODEL)}.querySelectorAll('td.num'), c => c.textContent).slice(1, 4).join() === '1,3,0'",
        20,
        "the model's requests, texts and failures shown",
    )

    # 4. No dialog opened, no script error, nothing refused by the CSP; the screenshot is kept.
    assert browser.dialogs == []
    assert not [c for c in browser.console if "dialog called" in c["text"] or c["type"] in ("error", "assert")]
    assert browser.exceptions == []
    # The only log entries allowed are the API calls refused (401) before the key: a CSP violation (an inline
    # handler or style attribute) would be logged with source "security".
    logged = [e for e in browser.log_entries if not (" 401 " in e["text"] and "/api/v1/inference/" in e["url"])]
    assert logged == []
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    browser.screenshot(ARTIFACT)
    print(f"console screenshot: {ARTIFACT}")

    # 5. The key is kept in the page's memory only.
    kept = browser.evaluate(
        "JSON.stringify([localStorage.length, sessionStorage.length, document.cookie, Object.entries(localStorage),"
        " Object.entries(sessionStorage), location.href, document.documentElement.outerHTML,"
        " document.getElementById('api-key').value])"
    )
    assert KEY not in kept
    assert json.loads(kept)[:3] == [0, 0, ""]

    # 6. Unload both through their rows' buttons.
    for model_id in (MODEL, "alpha"):
        browser.evaluate(f"{row(model_id)}.querySelector('button[data-action=unload]').click()")
        browser.wait_for(f"{row(model_id)} === null", LOAD_S, f"{model_id} no longer listed as loaded")
    assert browser.evaluate("document.getElementById('predict-model').value") == ""
    assert browser.dialogs == [] and browser.exceptions == []


def test_swagger_ui_renders_offline_and_tries_the_api_with_the_key(keyed):
    """Swagger UI at /api/v1/docs/: its assets come from the shim (this machine reaches nothing else), every
    operation of openapi.yaml is shown, and "Try it out" calls this very service with the key."""
    origin = keyed.origin
    with Browser() as browser:
        browser.navigate(f"{origin}/api/v1/docs/")
        paths = browser.wait_for(
            "(() => { const p = Array.from(document.querySelectorAll('.opblock-summary-path'), e => e.dataset.path);"
            " return p.length >= 10 && p; })()",
            30,
            "the operations rendered",
        )
        assert "/api/v1/inference/predict" in paths and "/api/v1/inference/status" in paths
        browser.evaluate("window.ui.preauthorizeApiKey('apiKey', " + json.dumps(KEY) + ")")  # the Authorize dialog
        browser.evaluate("document.querySelector('#operations-default-status .opblock-summary-control').click()")
        # "Try it out" is on from the start (tryItOutEnabled): the operation opens with its Execute button at once,
        # but Swagger UI renders it from an empty operation until it has resolved the operation's part of the
        # document (debounced, asynchronous); an Execute before that builds no request ("OperationNotFoundError:
        # Operation get_api_v1_inference_status not found" in the console) and spins forever. The documented
        # responses are rendered from the resolved operation, the one Execute sends: wait for them, as a person
        # sees them, before clicking.
        browser.wait_for(
            "document.querySelector('#operations-default-status .execute') !== null && document.querySelector("
            "'#operations-default-status .responses-table:not(.live-responses-table) tr.response[data-code=\"200\"]')"
            " !== null",
            10,
            "the status operation resolved, with its Execute button",
        )
        browser.evaluate("document.querySelector('#operations-default-status .execute').click()")
        answered = browser.wait_for(
            "(() => { const c = document.querySelector('#operations-default-status .live-responses-table"
            " tbody .response-col_status'); return c && c.textContent.trim(); })()",
            30,
            "the live response shown",
        )
        assert answered.startswith("200")
        body = browser.evaluate(
            "document.querySelector('#operations-default-status .live-responses-table .microlight').textContent"
        )
        assert json.loads(body)["service_status"] == "running"
        assert browser.evaluate("localStorage.length + sessionStorage.length") == 0  # persistAuthorization off
        failed = [e for e in browser.log_entries if e.get("source") == "network" or "Failed" in e.get("text", "")]
        assert failed == [] and browser.exceptions == []
