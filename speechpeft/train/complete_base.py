"""Completing an inference-only VITS voice: train the posterior side it was exported without.

Cloning trains against KL + duration losses, which need the posterior encoder q(z | spectrogram)
and the stochastic duration predictor's posterior flows. A voice exported for inference (Piper's
ONNX) has neither. The voice itself is their teacher: for every sentence it synthesizes, the
latent z the decoder received and the integer durations it used are known. So:

- the posterior encoder is fitted to the teacher's pairs (linear spectrogram of the audio, z) by
  Gaussian negative log-likelihood of z under (mean, log std), on random frame crops; nothing is
  back-propagated through the decoder;
- the duration predictor's posterior flows (and its flow that inference skips) are fitted by the
  duration predictor's own variational NLL of the teacher's durations, everything else frozen.

The inference path is never touched: the completed voice synthesizes exactly as before.

A posterior fitted to one voice's audio alone reads any other voice badly: the z it gives for
another speaker's speech decodes to mumbling (joe's own speech resampled by 0.9 or 1.15, which
moves pitch and formants together, already resynthesizes at WER 0.19 / 0.25 against 0.06). With
``augment`` > 0 each teacher sentence also gets that many resampled copies (factor drawn
log-uniformly within ``1 ± shift``), paired with the teacher z stretched to the new length, so the
posterior learns to encode other voices' speech as latents this voice's decoder can render. The
copies feed the posterior loss only; durations are learned from the voice's own sentences.
Measured (2026-12-03, 800 steps with ``augment=3, shift=0.3`` from the completed joe): the error on
resampled joe fell (z relative error 0.656 -> 0.555), but real other voices did not gain: their
held-out resynthesis WER went 0.51 / 0.53 / 1.03 / 0.94 -> 0.54 / 0.64 / 1.19 / 1.06 (kal, ked, slt,
LibriVox). What separates voices is more than a resampling factor; it stays off by default.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import SpeechPeftError
from ..fs import atomic_dir
from ..models.vits import VitsHost

REPORT_FILE = "complete_base.json"
POSTERIOR = re.compile(r"posterior_encoder\..*")
DURATION_POSTERIOR = re.compile(r"duration_predictor\.(post_.*|flows\.1\..*)")


@dataclass(frozen=True)
class CompleteOptions:
    output: Path
    sentences: int = 240  # teacher sentences (about 12 minutes of the voice)
    held_out: int = 12  # more, never trained on, for the report
    steps: int = 2000
    batch_size: int = 8
    crop_frames: int = 128  # the posterior encoder's receptive field is 4 * 16 + 1 = 65 frames at 16 layers
    lr: float = 1e-3
    augment: int = 0  # resampled copies of each teacher sentence (other pitch and formants), posterior loss only
    shift: float = 0.25  # their resampling factor lies within [1 / (1 + shift), 1 + shift]
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for key in ("sentences", "held_out", "steps", "batch_size", "crop_frames"):
            if getattr(self, key) < 1:
                raise SpeechPeftError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.augment < 0:
            raise SpeechPeftError(f"augment must be >= 0, got {self.augment}")
        if not 0.0 < self.shift <= 1.0:
            raise SpeechPeftError(f"shift must be in (0, 1], got {self.shift}")


@dataclass
class Teacher:
    """One synthesized sentence: ids (T,), hidden (H, T) of the frozen text encoder, the linear
    spectrogram (bins, F) of its audio, the z (C, F) the decoder got and the durations (T,)."""

    ids: torch.Tensor
    hidden: torch.Tensor
    spectrogram: torch.Tensor
    z: torch.Tensor
    durations: torch.Tensor


@torch.no_grad()
def teach(
    host: VitsHost, texts: Sequence[str], seed: int, progress: bool = True, desc: str = "teacher",
    augment: int = 0, shift: float = 0.25,
) -> tuple[list[Teacher], list[Teacher]]:  # fmt: skip
    """Synthesize ``texts`` one by one (noise at the voice's defaults), keeping z, durations and audio;
    and ``augment`` resampled copies of each (see the module's docstring)."""
    out, shifted = [], []
    rng = np.random.default_rng(seed)
    for i, text in enumerate(tqdm(texts, desc=desc, unit="sentence", disable=not progress)):
        ids, mask = host.tokenize([text], [f"sentence {i + 1}"])
        syn = host.infer(ids, mask, seed=seed + i)
        f = int(syn.frames[0])
        wave = syn.waveform[0, : int(syn.samples[0])].float().cpu().numpy()
        spec, frames = host.spectrogram([wave])
        if int(frames[0]) != f:
            raise SpeechPeftError(f"internal: the spectrogram has {int(frames[0])} frames, the latent {f}")
        enc = host.model.text_encoder(input_ids=ids, padding_mask=mask.unsqueeze(-1).float(), attention_mask=mask)
        t = Teacher(ids[0], enc.last_hidden_state[0].T.contiguous(), spec[0], syn.z[0, :, :f], syn.durations[0])
        out.append(t)
        for factor in np.exp(rng.uniform(-math.log1p(shift), math.log1p(shift), augment)):
            shifted.append(_resampled(host, t, wave, float(factor)))
    return out, shifted


def _resampled(host: VitsHost, t: Teacher, wave: np.ndarray, factor: float) -> Teacher:
    """``t`` played ``factor`` times faster at the same sampling rate (pitch and formants x factor),
    with the teacher z stretched linearly to the new number of frames."""
    rate = host.sampling_rate
    spec, frames = host.spectrogram([soxr.resample(wave, rate, round(rate / factor)).astype(np.float32)])
    f = int(frames[0])
    z = F.interpolate(t.z[None], size=f, mode="linear", align_corners=False)[0]
    return Teacher(t.ids, t.hidden, spec[0, :, :f], z, t.durations)


def posterior_nll(
    host: VitsHost, spec: torch.Tensor, z: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-value Gaussian NLL of ``z`` under the posterior encoder, and its mean (for the report)."""
    _, mean, log_std = host.model.posterior_encoder(spec, mask, None)
    nll = log_std + 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_std) + 0.5 * math.log(2 * math.pi)
    return (nll * mask).sum() / (mask.sum() * z.shape[1]), mean


def duration_nll(host: VitsHost, batch: Sequence[Teacher]) -> torch.Tensor:
    """The stochastic duration predictor's NLL of the teacher durations, per token."""
    width = max(t.ids.shape[0] for t in batch)
    hidden = torch.zeros(len(batch), batch[0].hidden.shape[0], width, device=host.device)
    durations = torch.zeros(len(batch), 1, width, device=host.device)
    x_mask = torch.zeros(len(batch), 1, width, device=host.device)
    for i, t in enumerate(batch):
        n = t.ids.shape[0]
        hidden[i, :, :n], durations[i, 0, :n], x_mask[i, 0, :n] = t.hidden, t.durations, 1
    nll = host.model.duration_predictor(hidden, x_mask, None, durations=durations, reverse=False)
    return nll.sum() / x_mask.sum()


def _crops(host: VitsHost, batch: Sequence[Teacher], frames: int, rng: random.Random):
    spec = torch.zeros(len(batch), batch[0].spectrogram.shape[0], frames, device=host.device)
    z = torch.zeros(len(batch), batch[0].z.shape[0], frames, device=host.device)
    mask = torch.zeros(len(batch), 1, frames, device=host.device)
    for i, t in enumerate(batch):
        f = t.z.shape[1]
        start = rng.randrange(0, max(1, f - frames + 1))
        n = min(frames, f - start)
        spec[i, :, :n], z[i, :, :n] = t.spectrogram[:, start : start + n], t.z[:, start : start + n]
        mask[i, 0, :n] = 1
    return spec, z, mask


@torch.no_grad()
def measure(host: VitsHost, teachers: Sequence[Teacher], shifted: Sequence[Teacher] = ()) -> dict[str, float]:
    """On whole held-out sentences: posterior NLL, relative error of its mean to the teacher z
    (||mean - z|| / ||z||), and the duration NLL; and the z error on one resampled copy of each (how
    the posterior reads a voice of other pitch and formants), if given."""
    host.model.eval()
    nll, dur = 0.0, 0.0
    for t in teachers:
        mask = torch.ones(1, 1, t.z.shape[1], device=host.device)
        nll += float(posterior_nll(host, t.spectrogram[None], t.z[None], mask)[0])
        torch.manual_seed(0)
        dur += float(duration_nll(host, [t]))
    k = len(teachers)
    out = {"posterior_nll": nll / k, "z_relative_error": _z_error(host, teachers), "duration_nll": dur / k}
    if shifted:
        out["z_relative_error_resampled"] = _z_error(host, shifted)
    return out


def _z_error(host: VitsHost, teachers: Sequence[Teacher]) -> float:
    err, norm = 0.0, 0.0
    for t in teachers:
        mask = torch.ones(1, 1, t.z.shape[1], device=host.device)
        _, mean = posterior_nll(host, t.spectrogram[None], t.z[None], mask)
        err += float(((mean[0] - t.z) ** 2).sum())
        norm += float((t.z**2).sum())
    return math.sqrt(err / norm)


def complete_base(host: VitsHost, texts: Sequence[str], opts: CompleteOptions) -> dict[str, Any]:
    """Train ``host``'s posterior side on its own speech and save the completed voice to ``opts.output``.

    ``texts`` gives at least ``sentences + held_out`` sentences in the voice's language.

    Raises:
        SpeechPeftError: too few texts, or a text the voice cannot read (one line naming it).
    """
    need = opts.sentences + opts.held_out
    if len(texts) < need:
        raise SpeechPeftError(
            f"complete-base needs {need} sentences ({opts.sentences} + {opts.held_out} held out), got {len(texts)}"
        )
    started = time.time()
    m = host.model
    m.requires_grad_(False)
    names = [n for n, _ in m.named_parameters() if POSTERIOR.fullmatch(n) or DURATION_POSTERIOR.fullmatch(n)]
    params = [p for n, p in m.named_parameters() if n in set(names)]
    for p in params:
        p.requires_grad_(True)
    held, held_shifted = teach(host, texts[opts.sentences : need], opts.seed + 10_000, opts.progress,
                               "teacher (held out)", 1, opts.shift)  # fmt: skip
    train, shifted = teach(host, texts[: opts.sentences], opts.seed, opts.progress, "teacher (training)",
                           opts.augment, opts.shift)  # fmt: skip
    pool = train + shifted
    before = measure(host, held, held_shifted)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, betas=(0.8, 0.99), weight_decay=0.0)
    warm = max(1, opts.steps // 20)  # linear warm-up, then cosine to zero
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, k / opts.steps)))
    )
    rng = random.Random(opts.seed)
    torch.manual_seed(opts.seed)
    m.eval()  # dropout stays off: the teacher was made without it
    bar = tqdm(range(opts.steps), desc="complete base", unit="step", disable=not opts.progress)
    for _ in bar:
        batch = rng.sample(train, min(opts.batch_size, len(train)))
        spec, z, mask = _crops(host, rng.sample(pool, len(batch)) if shifted else batch, opts.crop_frames, rng)
        post, _ = posterior_nll(host, spec, z, mask)
        dur = duration_nll(host, batch)
        optimizer.zero_grad(set_to_none=True)
        (post + dur).backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(posterior=f"{post.item():.3f}", duration=f"{dur.item():.3f}")
    m.requires_grad_(False)
    after = measure(host, held, held_shifted)
    report = {
        "base_model": getattr(host.config, "_name_or_path", None),
        "trained": sorted({_module(n) for n in names}),
        "trained_parameters": sum(p.numel() for p in params),
        "teacher_sentences": opts.sentences,
        "teacher_seconds": round(sum(t.z.shape[1] for t in train) * host.hop_length / host.sampling_rate, 1),
        "held_out_sentences": opts.held_out,
        "resampled_copies": opts.augment,
        "resampling_shift": opts.shift if opts.augment else None,
        "steps": opts.steps,
        "held_out": {"before": before, "after": after},
        "wall_seconds": round(time.time() - started, 1),
    }

    def write(tmp: Path) -> None:
        m.save_pretrained(tmp)
        host.front.save(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    atomic_dir(Path(opts.output), write)
    host.missing = []
    return report


def _module(name: str) -> str:
    """The module a trained tensor belongs to, for the report: posterior_encoder, duration_predictor.post_flows, ..."""
    parts = name.split(".")
    if parts[0] == "posterior_encoder":
        return parts[0]
    return ".".join(parts[:3] if parts[1] == "flows" else parts[:2])
