"""The demo page in headless Chromium (Debian's package, driven by Playwright), as a person uses it.

Real openai/whisper-base transcribes a real LibriVox clip through a LoRA adapter (random, with
weights small enough to keep the words: the page is under test here, not the adapter); Compare
shows one output per chosen adapter; a voice is cloned on the tiny test VITS and played back;
and each kind of bad input shows one line while the page goes on serving.

Set SPEECHPEFT_WRITE_SCREENSHOTS=1 to refresh the README's screenshots (docs/demo-*.png).
"""

import io
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, REAL_MODEL, ROOT, requires_real_model
from demo_helpers import running_demo
from tiny import make_clone_references, make_tiny_vits_dir, make_tiny_whisper_dir, random_lora_adapter

from speechpeft.eval import error_rate, make_normaliser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.integration, requires_real_model]
if CHROMIUM is None and not os.environ.get("SPEECHPEFT_REQUIRE_TOOLS"):
    pytestmark.append(pytest.mark.skip(reason="Chromium is not installed (apt-get install chromium)"))

CLIP = DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.flac"
TRANSCRIPTS = json.loads((DATA / "librivox" / "transcripts.json").read_text())
MAX_SECONDS = 30.0
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("browser-demo")
    adapters = root / "adapters"
    random_lora_adapter(REAL_MODEL, adapters / "gentle", seed=1, std=0.05, targets="attn_qv")
    random_lora_adapter(REAL_MODEL, adapters / "loud", seed=2, std=0.5, targets="attn_qv")
    random_lora_adapter(make_tiny_whisper_dir(root / "tiny-whisper"), adapters / "tiny-base", seed=3, std=0.5)
    config = dict(asr_models=(REAL_MODEL,), adapters=(str(adapters),), max_seconds=MAX_SECONDS, clone_steps=5,
                  tts_base=str(make_tiny_vits_dir(root / "vits", num_speakers=1)), clone_min_seconds=5.0)  # fmt: skip
    with running_demo(**config) as (demo, url), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(url)
        tab.wait_for_selector("#t-go")
        yield {"tab": tab, "root": root, "demo": demo}
        browser.close()


def upload(tab, component, files):
    """Put ``files`` (paths, or Playwright file payloads) into an audio or file component."""
    source = tab.locator(f'#{component} button[aria-label="Upload file"]')
    if source.count():
        source.click()
    tab.set_input_files(f"#{component} input[type=file]", files)


def pick(tab, dropdown, *labels):
    for label in labels:
        tab.click(f"#{dropdown} input")
        tab.locator("[role=option]", has_text=label).first.click()
    tab.keyboard.press("Escape")


def result(tab, status_id, before=""):
    """The status line once the run that was just started has written it."""
    tab.wait_for_function(
        f"(b) => {{ const v = document.querySelector('#{status_id} textarea').value; return v && v !== b; }}",
        arg=before,
        timeout=WAIT_MS,
    )
    return tab.input_value(f"#{status_id} textarea")


def transcribe(tab, files, adapter_label=None):
    tab.get_by_role("tab", name="Transcribe").click()
    clear = tab.locator('#t-audio button[aria-label="Clear"]')
    if clear.count():
        clear.first.click()
    upload(tab, "t-audio", files)
    tab.wait_for_timeout(1500)  # the upload reaches the server before the click reads it
    if adapter_label:
        pick(tab, "t-adapter", adapter_label)
    tab.evaluate("document.querySelector('#t-status textarea').value = ''")
    tab.click("#t-go")
    return result(tab, "t-status")


def shot(page, name, publish=True):
    """A full-page screenshot; the README's (``publish``) go to docs/ with SPEECHPEFT_WRITE_SCREENSHOTS=1."""
    path = page["root"] / f"demo-{name}.png"
    page["tab"].screenshot(path=str(path), full_page=True)
    if publish and os.environ.get("SPEECHPEFT_WRITE_SCREENSHOTS"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(path, ROOT / "docs" / f"demo-{name}.png")


def test_a_librivox_clip_transcribes_through_a_picked_adapter(page):
    tab = page["tab"]
    status = transcribe(tab, str(CLIP), "gentle")
    assert status.startswith("done:"), status
    text = tab.input_value("#t-text textarea")
    words = " ".join(line.split("] ", 1)[1] for line in text.splitlines())
    wer = error_rate([TRANSCRIPTS[CLIP.name]], [words], "wer", make_normaliser("whisper_en")).rate
    assert wer <= 0.10, (wer, words)
    assert tab.locator("#t-files a").count() >= 5 or tab.locator("#t-files").inner_text().count(".") >= 5
    shot(page, "transcribe")


def test_compare_shows_one_output_per_chosen_adapter(page):
    tab = page["tab"]
    tab.get_by_role("tab", name="Compare").click()
    upload(tab, "c-audio", str(CLIP))
    tab.wait_for_timeout(1500)
    pick(tab, "c-adapters", "gentle", "loud")
    tab.fill("#c-ref textarea", TRANSCRIPTS[CLIP.name])
    tab.click("#c-go")
    status = result(tab, "c-status")
    assert "3 output(s)" in status and "one mixed-adapter batch" in status, status
    rows = tab.locator("#compare-table tr.compare-row")
    assert rows.count() == 3
    labels = [rows.nth(i).locator("td").first.inner_text() for i in range(3)]
    assert labels == ["bare model", "gentle", "loud"]
    texts = [rows.nth(i).locator("td.compare-text").inner_text() for i in range(3)]
    assert texts[0] == texts[1] and texts[2] != texts[0]  # the loud adapter was applied to its row only
    shot(page, "compare")


def test_a_voice_clones_on_the_tiny_vits_and_plays_back(page):
    tab = page["tab"]
    refs = make_clone_references(page["root"] / "refs", n=10)
    tab.get_by_role("tab", name="Clone a voice").click()
    upload(tab, "k-files", sorted(str(p) for p in refs.parent.glob("*.wav")))
    tab.fill("#k-texts textarea", "\n".join(json.loads(line)["text"] for line in refs.read_text().splitlines()))
    tab.wait_for_timeout(1500)
    tab.click("#k-go")
    status = result(tab, "k-status")
    assert status.startswith("trained 'my-voice' on 10 clips"), status
    tab.fill("#k-say textarea", "hello there, a small cat is hungry and it is raining, thank you and good night")
    tab.click("#k-speak")
    assert result(tab, "k-spoken").startswith("spoke")
    assert "resemblyzer" in tab.inner_text("#k-sim")
    href = tab.locator('#k-audio a[data-testid="download-link"]').get_attribute("href")
    wave, rate = sf.read(io.BytesIO(httpx.get(href).content))
    assert rate == 16_000 and len(wave) > 0 and np.abs(wave).max() > 0
    tab.wait_for_function("document.querySelector('#k-audio time#duration').textContent !== '0:00'", timeout=10_000)
    tab.locator('#k-audio button[aria-label="Play"]').first.click()  # the page's own player
    tab.wait_for_function("document.querySelector('#k-audio time#time').textContent !== '0:00'", timeout=10_000)
    shot(page, "clone", publish=False)  # a tiny random voice: nothing to show a reader


def bad_inputs(root: Path):
    long = root / "long.wav"
    sf.write(long, np.zeros(int((MAX_SECONDS + 1) * 16_000), np.float32) + 0.01, 16_000)
    corrupt = {"name": "corrupt.wav", "mimeType": "audio/wav", "buffer": b"RIFF" + bytes(range(256)) * 16}
    empty = {"name": "empty.wav", "mimeType": "audio/wav", "buffer": b""}
    passwd = {"name": "../../etc/passwd", "mimeType": "audio/wav", "buffer": b"root:x:0:0:root:/root:/bin/bash\n"}
    return [
        ("corrupt", corrupt, None, "cannot decode 'corrupt.wav'"),
        ("empty", empty, None, "empty.wav: the file is empty (0 bytes)"),
        ("too long", str(long), None, f"31.0 s of audio; this demo takes at most {MAX_SECONDS:g} s"),
        ("path name", passwd, None, "cannot decode 'passwd'"),
        ("other base", str(CLIP), "tiny-base", "adapter 'tiny-base' was made for base"),
    ]


def test_bad_input_shows_one_line_and_the_page_keeps_serving(page):
    tab, root = page["tab"], page["demo"].workspace.root
    for case, files, adapter, message in bad_inputs(page["root"]):
        status = transcribe(tab, files, adapter)
        assert message in status and "\n" not in status and "Traceback" not in status, (case, status)
        assert str(root) not in status, (case, status)
        status = transcribe(tab, str(CLIP), "none (bare model)")
        assert status.startswith("done:"), (case, status)
