"""`transcribe --engine ct2` on the real whisper-base with an adapter: faster-whisper on the merged
CTranslate2 export writes the words the torch engine writes on the real LibriVox clips (float32;
punctuation differs on one clip, int8 is measured and said), and `auto` picks ct2 only where it
can serve the request. Batching files' first windows changes nothing."""

import json

import jiwer
import pytest
import torch
from conftest import DATA, REAL_MODEL, requires_real_model

from speechpeft import LoRAConfig, load_whisper, save_adapter
from speechpeft.cli import main
from speechpeft.eval.normalise import make_normaliser

pytestmark = [pytest.mark.integration, requires_real_model]
pytest.importorskip("faster_whisper", reason="faster-whisper is a test dependency")

CLIPS = DATA / "librivox"
NAMES = sorted(json.loads((CLIPS / "transcripts.json").read_text()))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """A LoRA with small random B (it changes the logits, not the reading), saved twice: as trained
    with the full 30 s window, and as if trained with an 8 s one."""
    root = tmp_path_factory.mktemp("ct2-real")
    host = load_whisper(REAL_MODEL, device="cpu")
    torch.manual_seed(0)
    host.inject(LoRAConfig(rank=8, targets="attn_qv"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.002)
    full = save_adapter(host.model, root / "full", extra={"window_seconds": 30.0})
    short = save_adapter(host.model, root / "short", extra={"window_seconds": 8.0})
    return root, full, short


def run(tmp_path, out, *options):
    args = ["transcribe", "--model", REAL_MODEL, "--language", "en", "--no-progress", "-f", "json",
            "-o", str(tmp_path / out), *options, *(str(CLIPS / n) for n in NAMES)]  # fmt: skip
    assert main(args) == 0
    return {n: json.loads((tmp_path / out / f"{n.rsplit('.', 1)[0]}.json").read_text()) for n in NAMES}


def test_ct2_writes_what_torch_writes_and_auto_picks_where_it_can(adapters, tmp_path, monkeypatch):
    root, full, short = adapters
    monkeypatch.setenv("SPEECHPEFT_CACHE", str(root / "cache"))
    torch_out = run(tmp_path, "torch", "--adapter", str(full), "--engine", "torch")
    ct2_out = run(tmp_path, "ct2", "--adapter", str(full), "--engine", "ct2", "--ct2-compute", "float32")
    assert {r["engine"] for r in torch_out.values()} == {"torch"}
    assert {r["engine"] for r in ct2_out.values()} == {"ct2 (float32, faster-whisper)"}
    # float32: the same words on every clip. The text is identical on 4 of the 5: on one, faster-whisper
    # writes "woman he ... was?" for torch's "woman, he ... was." (it pads a window's log-mel with
    # zeros where transformers pads the audio, so the last frames differ; the same for the bare model)
    same = sum(ct2_out[n]["text"] == torch_out[n]["text"] for n in NAMES)
    norm = make_normaliser("whisper_en")
    assert [norm(ct2_out[n]["text"]) for n in NAMES] == [norm(torch_out[n]["text"]) for n in NAMES]
    assert same >= 4, same
    for n in NAMES:
        assert set(ct2_out[n]) == set(torch_out[n])  # the same JSON fields whichever engine ran
        assert ct2_out[n]["segments"][0]["start"] == pytest.approx(torch_out[n]["segments"][0]["start"], abs=0.1)
    # The five clips go as one batch (first windows batched); file by file gives the same segments.
    one_by_one = run(tmp_path, "ct2-b1", "--adapter", str(full), "--engine", "ct2", "--ct2-compute", "float32",
                     "--batch-size", "1")  # fmt: skip
    assert [one_by_one[n]["segments"] for n in NAMES] == [ct2_out[n]["segments"] for n in NAMES]
    int8 = run(tmp_path, "int8", "--adapter", str(full), "--engine", "ct2")
    refs = [torch_out[n]["text"] for n in NAMES]
    differ = jiwer.wer([norm(r) for r in refs], [norm(int8[n]["text"]) for n in NAMES])
    print(f"int8 vs torch fp32: WER between them {differ:.4f}")
    assert differ <= 0.05  # int8 rounds the weights: measured 0 on these clips (a word may change elsewhere)
    cached = sorted(p.name for p in (root / "cache" / "ct2").iterdir())
    assert len(cached) == 2  # float32 and int8 of the same adapter
    auto = run(tmp_path, "auto", "--adapter", str(full), "--engine", "auto")
    assert {r["engine"] for r in auto.values()} == {"ct2 (int8, faster-whisper)"}
    assert sorted(p.name for p in (root / "cache" / "ct2").iterdir()) == cached  # reused, not converted again
    auto_short = run(tmp_path, "auto-short", "--adapter", str(short), "--engine", "auto")
    assert {r["engine"] for r in auto_short.values()} == {"torch"}  # its 8 s window is faster on torch
    mapping = tmp_path / "map.json"  # one file adapted, the others bare: torch, which batches them together
    mapping.write_text(json.dumps({NAMES[0]: str(full)}))
    mixed = run(tmp_path, "auto-mixed", "--adapter-map", str(mapping), "--engine", "auto")
    assert {r["engine"] for r in mixed.values()} == {"torch"}
