"""`speechpeft finetune` on a tiny wav2vec 2.0 CTC model (a new vocabulary and head), then
`transcribe` and `evaluate` with its adapter, through the CLI, as with Whisper's."""

import json

import numpy as np
import pytest
import soundfile as sf
from tiny import make_tiny_ctc_corpus, make_tiny_wav2vec2_dir, write_tiny_recipe

from speechpeft.cli import main


def rows(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA + new CTC head trained on 8 utterances of the bare tiny wav2vec2 (train = dev = test)."""
    tmp = tmp_path_factory.mktemp("w2v-finetune")
    model = make_tiny_wav2vec2_dir(tmp / "w2v")
    corpus = make_tiny_ctc_corpus(tmp / "corpus")
    adapter = {"kind": "lora", "rank": 8, "alpha": 16, "targets": "all_linear"}
    # the head starts from nothing: at the adapter's 3e-3 it would sit in CTC's all-blank plateau
    recipe = write_tiny_recipe(tmp / "ctc.yaml", model, corpus, tmp / "runs", adapter=adapter, lr=3e-3,
                               new_module_lr_scale=10, max_steps=60, eval_every=15, warmup_steps=4,
                               batch_size=8)  # fmt: skip
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 0
    return tmp, model, corpus, tmp / "runs" / "tiny"


def test_ctc_finetune_loss_falls_and_cer_improves(trained):
    _, _, _, run = trained
    losses = [r["loss"] for r in rows(run, "train")]
    assert len(losses) == 60 and sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    dev = {r["step"]: r["cer"] for r in rows(run, "dev")}
    # from the random head's babble (CER far above 1) past the all-blank plateau (exactly 1) to reading
    assert dev[0] > 1 and min(dev.values()) < 0.75, dev
    setup = rows(run, "setup")[0]
    head = 64 * 18 + 18  # hidden 64 -> 18 symbols: [PAD] [UNK] | and the 15 characters of TEXTS
    assert setup["trainable"] > head  # the guardrail counts the new head with the adapter
    for name in ("vocab.json", "tokenizer_config.json", "preprocessor_config.json", "adapter_model.safetensors"):
        assert (run / "adapter" / name).is_file(), name
    assert "SYNTHETIC" in (run / "report.md").read_text(encoding="utf-8")


def test_transcribe_and_evaluate_accept_the_ctc_adapter(trained, capsys):
    tmp, model, corpus, run = trained
    out = tmp / "evaluated.json"
    assert main(["evaluate", "--model", str(model), "--adapter", str(run / "adapter"), "--manifest",
                 str(corpus["test"]), "--output", str(out), "--no-progress"]) == 0  # fmt: skip
    result = json.loads(out.read_text(encoding="utf-8"))
    best = min(r["cer"] for r in rows(run, "dev"))
    assert result["corpus"]["rate"] == pytest.approx(best, abs=1e-9)  # the best dev checkpoint, decoded again
    texts = tmp / "texts"
    assert main(["transcribe", "--model", str(model), "--adapter", str(run / "adapter"), "--output-dir",
                 str(texts), "--no-progress", str(corpus["test"].parent / "c0.flac")]) == 0  # fmt: skip
    assert (texts / "c0.txt").read_text(encoding="utf-8").strip() == result["utterances"][0]["hypothesis"].strip()


def test_ctc_refusals_name_the_line(trained, tmp_path, capsys):
    tmp, _, corpus, _ = trained
    vocab_model = make_tiny_wav2vec2_dir(tmp_path / "w2v-vocab", texts=["你好"])  # knows 你 and 好 only
    recipe = write_tiny_recipe(tmp_path / "a.yaml", vocab_model, corpus, tmp_path / "runs", max_steps=2)
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all.jsonl:2: character '早' (U+65E9) is not in the model's vocabulary" in err[0]

    lines = corpus["train"].read_text(encoding="utf-8").splitlines()
    sf.write(tmp_path / "short.flac", np.random.default_rng(0).standard_normal(64).astype(np.float32) * 0.1, 16_000)
    short = {"audio_filepath": "short.flac", "text": "你好", "duration": 0.004, "language": "zh"}
    for i in range(3):
        (tmp_path / f"c{i}.flac").symlink_to(corpus["train"].parent / f"c{i}.flac")
    manifest = tmp_path / "short.jsonl"
    manifest.write_text("\n".join([*lines[:3], json.dumps(short, ensure_ascii=False)]) + "\n", encoding="utf-8")
    recipe = write_tiny_recipe(tmp_path / "b.yaml", tmp / "w2v", {"train": manifest, "dev": manifest,
                               "test": manifest}, tmp_path / "runs", max_steps=2)  # fmt: skip
    assert main(["finetune", "--recipe", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "short.jsonl:4: 0.004 s is shorter than the 0.0053125 s" in err[0], err


def test_export_carries_the_new_head_and_vocabulary(trained, tmp_path, capsys):
    """Merged, the export is a plain Wav2Vec2ForCTC + processor; as PEFT, the head travels as
    modules_to_save. Both give the logits of the base with the adapter attached."""
    import torch
    from peft import PeftModel
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    from speechpeft.models import load_host

    _, model, corpus, run = trained
    audio = [sf.read(corpus["test"].parent / f"c{i}.flac", dtype="float32")[0] for i in range(2)]
    host = load_host(str(model), device="cpu")
    host.attach_adapter(run / "adapter")
    host.model.eval()
    vocab = host.tokenizer.get_vocab()
    inputs = host.feature_extractor(audio, sampling_rate=16_000, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = host.model(inputs.input_values).logits

    merged = tmp_path / "merged"
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(merged), "--merge"]) == 0
    processor = Wav2Vec2Processor.from_pretrained(merged)
    assert processor.tokenizer.get_vocab() == vocab
    plain = Wav2Vec2ForCTC.from_pretrained(merged).eval()
    with torch.no_grad():
        got = plain(processor(audio, sampling_rate=16_000, padding=True, return_tensors="pt").input_values).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    peft_dir = tmp_path / "peft"
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(peft_dir)]) == 0
    assert json.loads((peft_dir / "adapter_config.json").read_text(encoding="utf-8"))["modules_to_save"] == ["lm_head"]
    assert (peft_dir / "vocab.json").is_file()
    base = Wav2Vec2ForCTC.from_pretrained(model, vocab_size=len(vocab), ignore_mismatched_sizes=True)
    with torch.no_grad():
        got = PeftModel.from_pretrained(base, peft_dir).eval()(inputs.input_values).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    capsys.readouterr()
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(tmp_path / "ct2"), "--format", "ct2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format ct2 is for Whisper" in err[0] and "wav2vec2 model" in err[0], err
    assert not (tmp_path / "ct2").exists()
