"""`speechpeft clone`: few-shot speaker adaptation of a frozen VITS model, USAT style.

The speaker costs a few small files: USAT's bottleneck adapters (flow + duration predictor,
text-encoder attention) and, on a base with a speaker table, one new speaker vector that
starts at the table's mean. The loss is KL + duration (no discriminators). A fifth of the
references (at least one) is held out to measure the adaptation loss before and after.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..adapters import USATConfig, adapter_parameters, load_adapter, save_adapter
from ..data import load_audio
from ..errors import SpeechPeftError
from ..fs import atomic_dir
from ..models.vits import VitsHost
from .mel import LogMel, mel_l1

SPEAKER_FILE = "speaker.safetensors"
FINETUNED_FILE = "finetuned.safetensors"  # variant "full": the fine-tuned modules themselves
# variant "full" fine-tunes every module USAT adapts, whole: the flow, the duration predictor
# and the text encoder's attention blocks
FULL_MODULES = r"flow|duration_predictor|text_encoder\.encoder\.layers\.\d+\.attention"
VARIANTS = ("instant", "embedding", "usat", "usat-decoder", "usat-posterior", "full")
RECONSTRUCTING = ("usat-decoder", "usat-posterior")  # variants trained with the decoder's mel L1 as well
ADAPTED = {"usat": "usat", "usat-decoder": "usat_with_decoder", "usat-posterior": "usat_with_posterior"}
SEGMENT_FRAMES = 32  # VITS's decoder segment: 32 frames (8192 samples at hop 256)
MEL_WEIGHT = 45.0  # VITS's c_mel
REPORT_FILE = "clone.json"
MIN_SECONDS = 1.0  # a shorter reference holds too little of the voice (and too few frames to align)
SILENT_RMS = 1e-4


@dataclass(frozen=True)
class Reference:
    audio: Path
    text: str
    where: str  # for messages: the path, or "manifest.jsonl:LINE"


@dataclass(frozen=True)
class CloneOptions:
    name: str
    output: Path
    steps: int = 200
    lr: float = 3e-3
    bottleneck: int = 8  # USAT's width
    batch_size: int = 8
    seed: int = 0
    progress: bool = True
    # "instant" (an instant base's projection of the references' verifier embedding; no training),
    # "embedding" (speaker vector only), "usat" (+ adapters), "usat-decoder" (+ decoder adapters,
    # trained by mel reconstruction), "usat-posterior" (+ posterior-encoder adapters, trained by the
    # same reconstruction), "full" (the modules USAT adapts, fine-tuned whole)
    variant: str = "usat"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise SpeechPeftError(f"unknown clone variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.steps < 1:
            raise SpeechPeftError(f"steps must be >= 1, got {self.steps}")


def load_references(refs: Sequence[Reference], rate: int) -> list[np.ndarray]:
    """Decode every reference at ``rate`` (other rates are resampled).

    Raises:
        SpeechPeftError: a reference is unreadable, silent or shorter than MIN_SECONDS; one line naming it.
    """
    arrays = []
    for ref in refs:
        audio = load_audio(ref.audio, rate, ref.where if ref.where != str(ref.audio) else "")
        if len(audio) < MIN_SECONDS * rate:
            raise SpeechPeftError(f"{ref.where}: reference lasts {len(audio) / rate:.2f} s; at least {MIN_SECONDS:g} s")
        if float(np.sqrt(np.mean(audio**2))) < SILENT_RMS:
            raise SpeechPeftError(f"{ref.where}: reference is silent")
        arrays.append(audio)
    return arrays


def clone(
    host: VitsHost,
    refs: Sequence[Reference],
    opts: CloneOptions,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Adapt ``host`` to the speaker of ``refs`` and write the speaker directory ``opts.output``.

    Returns the report (also written as ``clone.json``). ``on_step(step, steps, loss)`` is called
    after every update (a page's progress bar; the terminal gets tqdm's).

    Raises:
        SpeechPeftError: too few references (2 at least), or bad audio or text (one line each).
    """
    if opts.variant == "instant":
        return _instant(host, refs, opts)
    if len(refs) < 2:
        raise SpeechPeftError(f"clone needs at least 2 references (one is held out), got {len(refs)}")
    if any(n.startswith("posterior_encoder.") for n in host.missing):
        base = getattr(host.config, "_name_or_path", "") or "BASE"
        raise SpeechPeftError(
            f"{base}: this voice has no posterior encoder (an inference-only export), which cloning trains against; "
            f"complete it first: speechpeft tts complete-base --base {base} -o COMPLETED"
        )
    started = time.time()
    arrays = load_references(refs, host.sampling_rate)
    ids, mask = host.tokenize([r.text for r in refs], [r.where for r in refs])
    _seed(opts.seed)
    order = list(range(len(refs)))
    random.Random(opts.seed).shuffle(order)
    held = order[: max(1, len(refs) // 5)]
    train = order[len(held) :]
    host.model.requires_grad_(False)
    speaker = None
    if host.config.num_speakers > 1:  # a new row for the speaker table, from its mean
        speaker = torch.nn.Parameter(host.model.embed_speaker.weight.detach().mean(0).clone())
    elif host.projection is not None:  # an instant base: start from the instant speaker
        speaker = torch.nn.Parameter(_instant_vector(host, arrays))
    # the posterior encoder is frozen; without a speaker input its statistics are computed once
    fixed = speaker is None and opts.variant != "usat-posterior"
    stats = _posteriors(host, arrays) if fixed else None
    batches = {k: _batch(host, arrays, ids, mask, idx, stats) for k, idx in (("held", held), ("train", train))}
    before = _held_out_loss(host, batches["held"], speaker, opts.seed)
    base = sum(p.numel() for p in host.model.parameters())
    params = _trainable(host, opts, speaker)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    mel = LogMel(host.sampling_rate).to(host.device) if opts.variant in RECONSTRUCTING else None
    host.model.train()
    rng = random.Random(opts.seed)
    bar = tqdm(range(opts.steps), desc=f"clone {opts.name}", unit="step", disable=not opts.progress)
    for step in bar:
        pick = [train[i] for i in rng.sample(range(len(train)), min(opts.batch_size, len(train)))]
        b = _batch(host, arrays, ids, mask, pick, stats)
        out = host.loss(*b[:4], speaker, posterior=b[4], keep_z=mel is not None)
        loss = out["loss"]
        if mel is not None:
            recon = _segment_mel_loss(host, mel, out["z"], [arrays[i] for i in pick], speaker, rng)
            loss = loss + MEL_WEIGHT * recon
            bar.set_postfix(kl_dur=f"{out['loss'].item():.3f}", mel=f"{recon.item():.3f}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, opts.steps, float(loss.item()))
    host.model.eval()
    after = _held_out_loss(host, batches["held"], speaker, opts.seed)
    report = _report(host, opts, refs, arrays, [refs[i].where for i in held], {"before": before, "after": after},
                     opts.steps, sum(p.numel() for p in params), speaker is not None)  # fmt: skip
    report["base_parameters"] = base  # counted before the adapters were added
    report["fraction_of_base"] = round(report["trainable_parameters"] / base, 5)
    report["wall_seconds"] = round(time.time() - started, 1)

    def write(tmp: Path) -> None:
        if opts.variant in ADAPTED:
            save_adapter(host.model, tmp, extra={"speaker_name": opts.name})
        elif opts.variant == "full":
            names = {id(p) for p in params}
            state = {n: p.detach().cpu().contiguous() for n, p in host.model.named_parameters() if id(p) in names}
            save_file(state, str(tmp / FINETUNED_FILE), metadata={"name": opts.name})
        vector = {"speaker_embedding": speaker.detach().cpu().contiguous()} if speaker is not None else {}
        save_file(vector, str(tmp / SPEAKER_FILE), metadata={"name": opts.name})
        report["bytes"] = sum(f.stat().st_size for f in tmp.iterdir())
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    atomic_dir(Path(opts.output), write)
    return report


@torch.no_grad()
def _instant_vector(host: VitsHost, arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """The instant base's conditioning vector for the speaker of ``arrays``: projection of their verifier embedding."""
    from ..eval.tts import resample
    from ..models.speaker_encoder import load_speaker_encoder

    encoder = load_speaker_encoder(host.projection.verifier)
    rate = host.sampling_rate
    embedding = encoder.embed_speaker([resample(a, rate, encoder.sampling_rate) for a in arrays])
    return host.projection(embedding.to(host.device)).detach().clone()


def _instant(host: VitsHost, refs: Sequence[Reference], opts: CloneOptions) -> dict[str, Any]:
    """Variant "instant": a speaker with no training step, from an instant base's projection."""
    if host.projection is None:
        base = getattr(host.config, "_name_or_path", "") or "BASE"
        raise SpeechPeftError(
            f"{base}: variant 'instant' needs an instant base (speaker conditioning and a projection); "
            f"train one: speechpeft tts train-instant --base {base} --voice NAME=MANIFEST ... -o INSTANT"
        )
    if not refs:
        raise SpeechPeftError("clone needs at least 1 reference, got 0")
    started = time.time()
    arrays = load_references(refs, host.sampling_rate)
    vector = _instant_vector(host, arrays)
    report = _report(host, opts, refs, arrays, [], None, 0, 0, True)
    report["verifier"] = host.projection.verifier

    def write(tmp: Path) -> None:
        save_file(
            {"speaker_embedding": vector.cpu().contiguous()}, str(tmp / SPEAKER_FILE), metadata={"name": opts.name}
        )
        report["wall_seconds"] = round(time.time() - started, 2)
        report["bytes"] = sum(f.stat().st_size for f in tmp.iterdir())
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    atomic_dir(Path(opts.output), write)
    return report


def _report(host, opts, refs, arrays, held, loss, steps, trainable, speaker_vector) -> dict[str, Any]:
    """clone.json's fields, one spelling for every variant; ``wall_seconds`` is set at the end."""
    base = sum(p.numel() for p in host.model.parameters())
    return {
        "name": opts.name,
        "base_model": getattr(host.config, "_name_or_path", None),
        "references": len(refs),
        "reference_seconds": round(sum(len(a) for a in arrays) / host.sampling_rate, 2),
        "held_out": held,
        "held_out_loss": loss,
        "steps": steps,
        "trainable_parameters": trainable,
        "base_parameters": base,
        "fraction_of_base": round(trainable / base, 5),
        "variant": opts.variant,
        "speaker_vector": speaker_vector,
        "wall_seconds": 0.0,
    }


def load_speaker(host: VitsHost, folder: str | Path) -> torch.Tensor | None:
    """Load a cloned speaker into ``host``: its adapters, and its speaker vector (or None).

    Raises:
        SpeechPeftError: not a speaker directory, or made for another base model.
    """
    folder = Path(folder)
    if not (folder / SPEAKER_FILE).is_file():
        raise SpeechPeftError(f"'{folder}' is not a speaker directory (no {SPEAKER_FILE}); make one with clone")
    if (folder / FINETUNED_FILE).is_file():
        state = load_file(str(folder / FINETUNED_FILE))
        own = dict(host.model.named_parameters())
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise SpeechPeftError(f"{folder / FINETUNED_FILE}: {bad[0]!r} does not fit this base model")
        host.model.load_state_dict(state, strict=False)
    elif (folder / "adapter_model.safetensors").is_file():
        load_adapter(host.model, folder)
    vector = load_file(str(folder / SPEAKER_FILE)).get("speaker_embedding")
    return vector.to(host.device) if vector is not None else None


def _trainable(host: VitsHost, opts: CloneOptions, speaker: torch.nn.Parameter | None) -> list[torch.nn.Parameter]:
    """What the variant trains: the speaker vector, plus USAT adapters or the speaker-relevant modules."""
    vector = [speaker] if speaker is not None else []
    if opts.variant == "embedding":
        if speaker is None:
            raise SpeechPeftError("variant 'embedding' needs a multi-speaker base (one with a speaker table)")
        return vector
    if opts.variant in ADAPTED:
        host.inject(USATConfig(bottleneck=opts.bottleneck, targets=ADAPTED[opts.variant]))
        return adapter_parameters(host.model) + vector
    modules = [m for n, m in host.model.named_modules() if re.fullmatch(FULL_MODULES, n)]
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params + vector


def _posteriors(host: VitsHost, arrays: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for a in arrays:
        spec, frames = host.spectrogram([a])
        mean, log_std = host.posterior(spec, frames)
        out.append((mean[0], log_std[0]))
    return out


def _batch(host, arrays, ids, mask, idx, stats=None):
    """(ids, mask, spectrogram or None, frames, posterior or None) for the items ``idx``."""
    sel = torch.tensor(idx, device=ids.device)
    width = int(mask[sel].sum(1).max())
    if stats is None:
        spec, frames = host.spectrogram([arrays[i] for i in idx])
        return ids[sel, :width], mask[sel, :width], spec, frames, None
    frames = torch.tensor([stats[i][0].shape[1] for i in idx], device=host.device)
    mean = torch.zeros(len(idx), stats[idx[0]][0].shape[0], int(frames.max()), device=host.device)
    log_std = torch.zeros_like(mean)
    for k, i in enumerate(idx):
        mean[k, :, : frames[k]], log_std[k, :, : frames[k]] = stats[i]
    return ids[sel, :width], mask[sel, :width], None, frames, (mean, log_std)


def _segment_mel_loss(host, mel, z, audio, speaker, rng) -> torch.Tensor:
    """Mel L1 of the decoder on a random SEGMENT_FRAMES slice of each item's posterior z vs the real audio there."""
    hop, seg = host.hop_length, SEGMENT_FRAMES
    zs, real = [], []
    for k, a in enumerate(audio):
        frames = len(a) // hop
        start = rng.randrange(0, max(1, frames - seg + 1))
        piece = torch.zeros(seg * hop)
        got = torch.from_numpy(a[start * hop : (start + seg) * hop])
        piece[: len(got)] = got
        zs.append(z[k, :, start : start + seg])
        real.append(piece)
    width = min(t.shape[1] for t in zs)
    g = host.speaker_conditioning(speaker, len(audio))
    generated = host.model.decoder(torch.stack([t[:, :width] for t in zs]), g)[:, 0]
    return mel_l1(mel, generated, torch.stack(real)[:, : generated.shape[1]].to(generated.device))


@torch.no_grad()
def _held_out_loss(host, batch, speaker, seed) -> float:
    _seed(seed)  # the posterior sample
    was = host.model.training
    host.model.eval()
    try:
        return round(float(host.loss(*batch[:4], speaker, posterior=batch[4])["loss"]), 4)
    finally:
        host.model.train(was)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # transformers' VITS draws LayerDrop from numpy
    torch.manual_seed(seed)
