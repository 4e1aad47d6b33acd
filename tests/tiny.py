"""A complete tiny Whisper directory (model + tokenizer + feature extractor + generation config)
and a tiny corpus, so the real CLI can train and decode in seconds without any download.

The tokenizer is byte-level with no merges: every UTF-8 byte is a token, plus Whisper's special
tokens for English and Chinese and its timestamp tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
]  # fmt: skip
WINDOW_SECONDS = 3


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must compute bit-identically to this process: the
    tests folder importable and the same thread count (a matmul split over a different number of
    threads sums in another order, so a run resumed across processes would drift in the last bit)."""
    import os

    tests = str(Path(__file__).resolve().parent)
    threads = str(torch.get_num_threads())
    return {**os.environ, "PYTHONPATH": tests, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **extra}


def make_tiny_whisper_dir(path: Path, seed: int = 0) -> Path:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    # Timestamp tokens follow <|notimestamps|>, one per 20 ms of the window, as in real Whisper.
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(WINDOW_SECONDS * 50 + 1)])
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
        num_mel_bins=80, max_source_positions=WINDOW_SECONDS * 50, max_target_positions=96,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=ids["<|startoftranscript|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True, no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, max_length=96, suppress_tokens=[], begin_suppress_tokens=[eot],
    )  # fmt: skip
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=80, chunk_length=WINDOW_SECONDS), tok)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


TEXTS = ["你好", "早上好", "小猫", "下雨了", "我饿了", "谢谢你", "再见", "好的"]


def make_tiny_corpus(folder: Path, n: int = 8) -> dict[str, Path]:
    """``n`` utterances of two-tone audio (≤ 1.6 s), one manifest used for train, dev and test."""
    import soundfile as sf  # here, not at the top: the GPU machine's image has no audio stack

    folder.mkdir(parents=True, exist_ok=True)
    rate = 16_000
    rows = []
    for i in range(n):
        seconds = 0.8 + 0.1 * i
        t = np.arange(int(seconds * rate)) / rate
        audio = 0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.2 * np.sin(2 * np.pi * (900 + 45 * i) * t)
        sf.write(folder / f"u{i}.flac", audio.astype(np.float32), rate)
        text = TEXTS[i % len(TEXTS)]
        rows.append(
            {
                "audio_filepath": f"u{i}.flac",
                "text": text,
                "duration": seconds,
                "language": "zh",
                "speaker": f"k{i % 2}",
            }
        )
    manifest = folder / "all.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"train": manifest, "dev": manifest, "test": manifest}


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None, **popen):
    """``torchrun --standalone --nproc-per-node N ARGS`` (a module: ``-m speechpeft ...``) as a
    child process, one thread per process; returns the ``subprocess.Popen``."""
    import subprocess
    import sys

    env = env or child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


DROPOUT_OFF = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                   final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)  # fmt: skip


def write_tiny_recipe(
    path: Path, model_dir: Path, corpus: dict[str, Path], output_dir: Path, adapter: dict | None = None, **train
) -> Path:
    adapter = adapter or {"kind": "s2lora", "rank": 8}
    values = {"lr": 1.0e-2, "max_steps": 12, "batch_size": 4, "warmup_steps": 2, "eval_every": 4, "checkpoint_every": 4}
    values.update(train)
    lines = [
        "# speechpeft finetune --recipe <this file>  (a tiny random Whisper; for tests)",
        "name: tiny",
        f"output_dir: {output_dir}",
        "model:",
        f"  name: {model_dir}",
        "  device: cpu",
        f"  window_seconds: {WINDOW_SECONDS}",
        "adapter:",
        *(f"  {k}: {v}" for k, v in adapter.items()),
        "data:",
        *(f"  {k}: {v}" for k, v in corpus.items()),
        "  synthetic: true",
        "train:",
        *(f"  {k}: {v}" for k, v in values.items()),
        "eval:",
        "  batch_size: 8",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


VITS_LETTERS = "abcdefghijklmnopqrstuvwxyz '"


def make_tiny_vits_dir(path: Path, num_speakers: int = 3, seed: int = 0) -> Path:
    """A saved tiny VITS (multi-speaker when num_speakers > 1) with a character tokenizer.

    Its HiFi-GAN decoder is wider than the rest needs, so that, as in a real VITS, one speaker's
    USAT adapters are under 1 % of the model (the decoder takes no part in the adaptation loss).
    """
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(VITS_LETTERS)}}
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = VitsTokenizer(str(path / "vocab.json"), phonemize=False, add_blank=True, normalize=True)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, window_size=2, ffn_dim=64,
        flow_size=16, spectrogram_bins=33, upsample_initial_channel=160, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2,
        wavenet_kernel_size=3, duration_predictor_filter_channels=32, duration_predictor_flow_bins=4,
        depth_separable_num_layers=2, num_speakers=num_speakers, speaker_embedding_size=8 if num_speakers > 1 else 0,
        sampling_rate=16_000,
    )  # fmt: skip
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


CLONE_TEXTS = ["hello there", "a small cat", "it is raining", "i am hungry", "thank you", "good night"]


def make_clone_references(folder: Path, n: int = 20, rate: int = 16_000, pitch: float = 180) -> Path:
    """``n`` synthetic 'utterances' of one voice (harmonics of one ``pitch``) and a manifest."""
    import soundfile as sf  # here, not at the top: the GPU machine's image has no audio stack

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 1.2 + 0.05 * (i % 7)
        t = np.arange(int(seconds * rate)) / rate
        f0 = pitch + 10 * np.sin(2 * np.pi * 0.7 * t + i)
        audio = sum(0.2 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / rate) for k in (1, 2, 3))
        sf.write(folder / f"r{i:02d}.wav", audio.astype(np.float32), rate)
        rows.append({"audio_filepath": f"r{i:02d}.wav", "text": CLONE_TEXTS[i % len(CLONE_TEXTS)]})
    (folder / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder / "refs.jsonl"


def tiny_wav2vec2_config(**overrides):
    """A wav2vec 2.0 of 2 layers, hidden 64, a 3-layer conv stack of 80 samples per frame (5 ms),
    with a small quantizer so the same config serves Wav2Vec2ForPreTraining."""
    from transformers import Wav2Vec2Config

    values = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
        codevector_dim=32, proj_codevector_dim=32, num_codevectors_per_group=16, num_codevector_groups=2,
        num_negatives=10, mask_time_length=4, mask_time_prob=0.05, feat_extract_norm="group",
    )  # fmt: skip
    values.update(overrides)
    return Wav2Vec2Config(**values)


def build_tiny_wav2vec2(seed: int = 0, **overrides):
    """A random tiny ``Wav2Vec2ForCTC`` (its head: 32 placeholder outputs), in eval mode."""
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(tiny_wav2vec2_config(**overrides)).eval()


def make_tiny_wav2vec2_dir(path: Path, seed: int = 0, texts: list[str] | None = None, **overrides) -> Path:
    """A saved tiny wav2vec2 with its feature extractor: like a pretraining checkpoint (no CTC
    tokenizer) unless ``texts`` is given, then a CTC checkpoint whose vocabulary spells them.
    ``overrides``: config fields (e.g. dropout off)."""
    from transformers import Wav2Vec2FeatureExtractor

    model = build_tiny_wav2vec2(seed, **overrides)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)  # fmt: skip
    if texts is not None:
        from speechpeft.models.wav2vec2 import build_vocabulary, make_tokenizer

        tok = make_tokenizer(build_vocabulary(texts))
        model = build_tiny_wav2vec2(seed, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **overrides)
        tok.save_pretrained(path)
    model.save_pretrained(path)
    fe.save_pretrained(path)
    return path


def wav2vec2_batch(vocab_size: int = 32, seed: int = 123) -> dict[str, torch.Tensor]:
    """Random audio (3 x 1 s) and character labels for a tiny wav2vec2 CTC model."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_values": torch.randn(3, 16_000, generator=g),
        "labels": torch.randint(1, vocab_size, (3, 7), generator=g),
    }


def make_tiny_ctc_corpus(folder: Path, n: int = 8) -> dict[str, Path]:
    """``n`` utterances in which every character is its own 0.2 s chord (and a space 0.1 s of
    quiet): audio whose frames change with the text, so a CTC model can learn to read it. (The
    steady two-tone clips of ``make_tiny_corpus`` give every frame the same content, which only a
    model with absolute positions, such as Whisper, can turn into a sequence.)"""
    import soundfile as sf  # here, not at the top: the GPU machine's image has no audio stack

    folder.mkdir(parents=True, exist_ok=True)
    rate = 16_000
    chars = sorted({c for t in TEXTS for c in t})
    rows = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        pieces = [np.zeros(int(0.05 * rate))]
        for c in text:
            k = chars.index(c)
            t = np.arange(int(0.2 * rate)) / rate
            pieces.append(0.3 * np.sin(2 * np.pi * (150 + 60 * k) * t) + 0.2 * np.sin(2 * np.pi * (1000 + 85 * k) * t))
        pieces.append(np.zeros(int(0.05 * rate)))
        audio = np.concatenate(pieces).astype(np.float32)
        sf.write(folder / f"c{i}.flac", audio, rate)
        rows.append({"audio_filepath": f"c{i}.flac", "text": text, "duration": len(audio) / rate, "language": "zh",
                     "speaker": f"k{i % 2}"})  # fmt: skip
    manifest = folder / "all.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"train": manifest, "dev": manifest, "test": manifest}


def make_tiny_wav2vec2_pretraining_dir(path: Path, seed: int = 0, **overrides) -> Path:
    """A saved tiny ``Wav2Vec2ForPreTraining`` (quantizer included) with its feature extractor."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    torch.manual_seed(seed)
    Wav2Vec2ForPreTraining(tiny_wav2vec2_config(**overrides)).save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(path)  # fmt: skip
    return path


def write_tiny_cpt_recipe(path: Path, model_dir: Path, audio: Path, output_dir: Path, **train) -> Path:
    """A continued-pretraining recipe over a folder of untranscribed audio (train = dev), for tests."""
    values = {"lr": 1e-3, "max_steps": 30, "batch_size": 4, "warmup_steps": 3, "eval_every": 10, "checkpoint_every": 10}
    values.update(train)
    lines = [
        "# speechpeft pretrain --recipe <this file>  (a tiny random wav2vec2; for tests)",
        "name: tiny-cpt",
        f"output_dir: {output_dir}",
        "model:",
        f"  name: {model_dir}",
        "  device: cpu",
        f"  window_seconds: {WINDOW_SECONDS}",
        "data:",
        f"  train: {audio}",
        f"  dev: {audio}",
        "  synthetic: true",
        "train:",
        *(f"  {k}: {v}" for k, v in values.items()),
        "pretrain:",
        "  mask_time_length: 4",
        "  num_negatives: 20",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def random_lora_adapter(model: str | Path, out: Path, seed: int, std: float, targets: str = "all_linear") -> Path:
    """A LoRA adapter for ``model`` (a path or hub id) with random non-zero B of spread ``std``:
    it changes what the model computes (how much, by ``std``) without any training."""
    from speechpeft.adapters import LoRAConfig, save_adapter
    from speechpeft.models import load_whisper

    host = load_whisper(str(model), device="cpu")
    host.inject(LoRAConfig(rank=4, alpha=8, targets=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if p.requires_grad and name.endswith("lora_B.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return save_adapter(host.model, out)
