"""Exports of an adapter on the real whisper-base: the CTranslate2 model (faster-whisper's engine)
transcribes real speech exactly as the merged transformers model does."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA, REAL_MODEL, requires_real_model
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from speechpeft import S2LoRAConfig, load_whisper, save_adapter
from speechpeft.models.export import export
from speechpeft.models.whisper import WhisperHost

pytestmark = [pytest.mark.integration, requires_real_model]
ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is a test dependency")

CLIPS = DATA / "librivox"


def test_ct2_export_transcribes_real_speech_exactly_as_the_merged_model(tmp_path):
    names = sorted(json.loads((CLIPS / "transcripts.json").read_text()))
    arrays = [sf.read(CLIPS / n, dtype="float32")[0] for n in names]
    assert len(arrays) >= 5

    host = load_whisper(REAL_MODEL, device="cpu")
    host.inject(S2LoRAConfig(rank=32, targets="attn"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in host.model.named_parameters():
            if n.endswith(".lam"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_adapter(host.model, tmp_path / "adapter")
    export(tmp_path / "adapter", tmp_path / "hf", "hf")
    export(tmp_path / "adapter", tmp_path / "ct2", "ct2")

    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")
    merged = WhisperHost(WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval(), processor)
    bare = load_whisper(REAL_MODEL, device="cpu")
    feats = merged.features(arrays[:1])
    with torch.no_grad():
        ids = torch.tensor([[50258, 50259, 50359, 50363]])
        moved = (merged.model(input_features=feats, decoder_input_ids=ids).logits
                 - bare.model(input_features=feats, decoder_input_ids=ids).logits).abs().max()  # fmt: skip
    assert moved > 1e-3  # the export carries the adapter
    hf_texts = merged.transcribe(arrays, language="en")

    model = ctranslate2.models.Whisper(str(tmp_path / "ct2"), device="cpu", compute_type="float32")
    tok = processor.tokenizer
    prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    features = processor.feature_extractor(arrays, sampling_rate=16_000, return_tensors="np").input_features
    out = model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), [prompt] * len(arrays), beam_size=1
    )
    ct2_texts = [tok.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in out]
    assert ct2_texts == hf_texts
