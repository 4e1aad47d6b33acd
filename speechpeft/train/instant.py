"""Instant speaker adaptation (USAT's zero-shot half): train a single-speaker voice's speaker input.

``train_instant`` turns a completed single-speaker base into an *instant base*: the voice gains
zero-initialised conditioning layers (``models.vits_speaker``) and a projection from a verifier
embedding to their input, trained on several voices at once with the cloning objective (KL +
duration, plus mel L1 of the decoder on random segments of the posterior z, VITS style). Each
item is conditioned on its own utterance's embedding, so the projection sees as many points as
there are references. Afterwards ``clone --variant instant`` makes a speaker from references
with no training step: the projection of their mean embedding. Fine-grained USAT clones on an
instant base start from that vector.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import SpeechPeftError
from ..eval.tts import resample
from ..fs import atomic_dir
from ..models.speaker_encoder import load_speaker_encoder
from ..models.vits import VitsHost
from ..models.vits_speaker import INSTANT_REPORT as REPORT_FILE
from ..models.vits_speaker import TRAINED_CONDITIONING, SpeakerProjection, add_conditioning, conditioning_layers
from .clone import MEL_WEIGHT, Reference, _batch, _posteriors, _seed, _segment_mel_loss, load_references
from .mel import LogMel


@dataclass(frozen=True)
class InstantOptions:
    output: Path
    steps: int = 400
    lr: float = 1e-3
    batch_size: int = 8
    width: int = 64  # the conditioning vector
    seed: int = 0
    progress: bool = True
    verifier: str = "resemblyzer"

    def __post_init__(self):
        for key in ("steps", "batch_size", "width"):
            if getattr(self, key) < 1:
                raise SpeechPeftError(f"{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class _Voice:
    arrays: list
    ids: torch.Tensor
    mask: torch.Tensor
    stats: list
    embeddings: torch.Tensor  # (N, D), one per reference
    train: list[int]
    held: list[int]


def train_instant(
    host: VitsHost, voices: Mapping[str, Sequence[Reference]], opts: InstantOptions, encoder: Any = None
) -> dict[str, Any]:
    """Train speaker conditioning for ``host`` on ``voices`` (name -> references) and save the instant base.

    Raises:
        SpeechPeftError: fewer than 2 voices or 3 references in one, a base that already takes a
            speaker or lacks its posterior encoder, or bad audio or text (one line naming it).
    """
    if len(voices) < 2:
        raise SpeechPeftError(f"instant training needs at least 2 voices, got {len(voices)}")
    if any(n.startswith("posterior_encoder.") for n in host.missing):
        raise SpeechPeftError("this voice has no posterior encoder; complete it first: speechpeft tts complete-base")
    started = time.time()
    _seed(opts.seed)
    cond = VitsHost(add_conditioning(host.model, opts.width), host.front)
    encoder = encoder or load_speaker_encoder(opts.verifier)
    rng = random.Random(opts.seed)
    data: dict[str, _Voice] = {}
    for name, refs in tqdm(voices.items(), desc="voices", unit="voice", disable=not opts.progress):
        if len(refs) < 3:
            raise SpeechPeftError(f"voice {name!r}: needs at least 3 references (one is held out), got {len(refs)}")
        arrays = load_references(refs, cond.sampling_rate)
        ids, mask = cond.tokenize([r.text for r in refs], [r.where for r in refs])
        emb = encoder.embed([resample(a, cond.sampling_rate, encoder.sampling_rate) for a in arrays])
        order = list(range(len(refs)))
        rng.shuffle(order)
        k = max(1, len(refs) // 10)
        data[name] = _Voice(arrays, ids, mask, _posteriors(cond, arrays), emb.to(cond.device), order[k:], order[:k])
    projection = SpeakerProjection(opts.verifier, next(iter(data.values())).embeddings.shape[1], opts.width)
    projection.to(cond.device)
    cond.model.requires_grad_(False)
    layers = {n: m for n, m in conditioning_layers(cond.model).items() if n.startswith(TRAINED_CONDITIONING)}
    params = list(projection.parameters()) + [p for m in layers.values() for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    mel = LogMel(cond.sampling_rate).to(cond.device)
    before = _held_out(cond, data, projection, mel, opts.seed)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    names = list(data)
    cond.model.train()
    bar = tqdm(range(opts.steps), desc="instant", unit="step", disable=not opts.progress)
    for step in bar:
        if step % len(names) == 0:
            rng.shuffle(names)
        v = data[names[step % len(names)]]
        pick = rng.sample(v.train, min(opts.batch_size, len(v.train)))
        out, recon = _loss(cond, v, pick, projection, mel, rng)
        loss = out["loss"] + MEL_WEIGHT * recon
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(kl_dur=f"{out['loss'].item():.2f}", mel=f"{recon.item():.3f}")
    cond.model.eval()
    cond.model.requires_grad_(False)
    after = _held_out(cond, data, projection, mel, opts.seed)
    report = {
        "base_model": getattr(host.config, "_name_or_path", None),
        "voices": {
            n: {"references": len(v.arrays), "seconds": round(sum(map(len, v.arrays)) / cond.sampling_rate, 1)}
            for n, v in data.items()
        },  # fmt: skip
        "verifier": encoder.name,
        "width": opts.width,
        "steps": opts.steps,
        "trained_parameters": sum(p.numel() for p in params),
        "held_out": {"before": before, "after": after},
        "wall_seconds": round(time.time() - started, 1),
    }

    def write(tmp: Path) -> None:
        cond.model.save_pretrained(tmp)
        host.front.save(tmp)
        projection.save(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    atomic_dir(Path(opts.output), write)
    return report


def _loss(host, v: _Voice, pick, projection, mel, rng):
    b = _batch(host, v.arrays, v.ids, v.mask, pick, v.stats)
    g = projection(v.embeddings[pick])  # (B, width): each item its own utterance's embedding
    out = host.loss(*b[:4], g, posterior=b[4], keep_z=True)
    return out, _segment_mel_loss(host, mel, out["z"], [v.arrays[i] for i in pick], g, rng)


@torch.no_grad()
def _held_out(host, data, projection, mel, seed) -> dict[str, float]:
    """Mean over voices of the held-out KL + duration and mel L1 (posterior samples and segments seeded)."""
    was = host.model.training
    host.model.eval()
    kl, rec = [], []
    try:
        for v in data.values():
            _seed(seed)
            out, recon = _loss(host, v, v.held, projection, mel, random.Random(seed))
            kl.append(float(out["loss"]))
            rec.append(float(recon))
    finally:
        host.model.train(was)
    return {"kl_duration": round(sum(kl) / len(kl), 4), "mel_l1": round(sum(rec) / len(rec), 4)}
