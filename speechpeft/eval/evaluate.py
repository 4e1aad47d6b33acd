"""`speechpeft evaluate`: decode a manifest, score it, bootstrap it, and compare two results.

The result is a JSON-ready dict (its fields are documented in README.md, "speechpeft evaluate").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import Utterance
from ..errors import SpeechPeftError
from .asr import transcribe_utterances
from .bootstrap import blocks, paired_test, rate_ci
from .metrics import pooled, utterance_counts
from .normalise import has_opencc, make_normaliser

RESULT_VERSION = 1
UNSPACED = {"zh", "ja", "th", "lo", "km", "my", "yue", "bo"}  # scripts written without word spaces


def auto_metric(language: str | None) -> str:
    """CER for languages written without spaces between words, WER otherwise."""
    return "cer" if (language or "").lower() in UNSPACED else "wer"


def auto_normaliser(language: str | None, metric: str) -> str:
    lang = (language or "").lower()
    if metric == "cer" and lang in UNSPACED:
        return "zh_chars" if lang in ("zh", "yue") else "basic"
    return "whisper_en" if lang == "en" else "basic"


def score(
    utts: Sequence[Utterance], hyps: Sequence[str], metric: str, normaliser: str, english_spelling=None
) -> dict[str, Any]:
    """Pooled rate, 95 % bootstrap intervals (by utterance and by speaker), per-speaker rows."""
    normalise = make_normaliser(normaliser, english_spelling)
    counts = utterance_counts([u.text for u in utts], hyps, metric, normalise)
    corpus = pooled(counts, metric)
    edits, units = [c.edits for c in counts], [c.reference_units for c in counts]
    speakers = [u.speaker or "(unknown)" for u in utts]
    se, sn, names = blocks(edits, units, speakers)
    per_speaker = []
    for name in names:
        mine = [c for c, s in zip(counts, speakers, strict=True) if s == name]
        row = pooled(mine, metric).as_dict() if any(c.reference_units for c in mine) else {"rate": None}
        per_speaker.append({"speaker": name, **row, "utterances": len(mine)})
    return {
        "corpus": corpus.as_dict(),
        "ci95": {"utterance": rate_ci(edits, units), "speaker": rate_ci(se, sn), "speakers": len(names)},
        "per_speaker": per_speaker,
        "utterances": [
            {"audio": str(u.audio), "speaker": u.speaker, "reference": u.text, "hypothesis": h, **vars(c)}
            for u, h, c in zip(utts, hyps, counts, strict=True)
        ],
    }


def evaluate_manifest(
    host: Any,
    utts: Sequence[Utterance],
    *,
    manifest: str,
    model: str,
    adapter: str | None,
    language: str | None,
    metric: str,
    normaliser: str,
    beam: int = 1,
    batch_size: int = 16,
    max_tokens_per_second: float = 12.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode ``utts`` with ``host`` and return the full result record."""
    hyps = transcribe_utterances(host, utts, language, beam, batch_size, max_tokens_per_second, "evaluate", progress)
    spelling = host.english_spelling
    result = score(utts, hyps, metric, normaliser, spelling)
    return {
        "version": RESULT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": manifest,
        "model": model,
        "adapter": adapter,
        "metric": metric,
        "normaliser": normaliser + (" (+ opencc t2s)" if normaliser == "zh_chars" and has_opencc() else ""),
        "decoding": {
            "language": language,
            "task": "transcribe",
            "beam": beam,
            "window_seconds": host.window_seconds,
            "max_new_tokens": f"16 + {max_tokens_per_second:g} per second of audio",
        },
        **result,
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap of two results on the same manifest: delta = rate(A) - rate(B).

    Raises:
        SpeechPeftError: the results are for different manifests, utterances, metrics or
            normalisers.
    """
    for key in ("manifest", "metric", "normaliser"):
        if a.get(key) != b.get(key):
            raise SpeechPeftError(f"cannot compare: {key} differs ({a.get(key)!r} vs {b.get(key)!r})")
    ua, ub = a["utterances"], b["utterances"]
    if [(u["audio"], u["reference"]) for u in ua] != [(u["audio"], u["reference"]) for u in ub]:
        raise SpeechPeftError("cannot compare: the two results hold different utterances")
    edits_a = [u["substitutions"] + u["deletions"] + u["insertions"] for u in ua]
    edits_b = [u["substitutions"] + u["deletions"] + u["insertions"] for u in ub]
    test = paired_test(edits_a, edits_b, [u["reference_units"] for u in ua])
    return {"metric": a["metric"], "rate_a": a["corpus"]["rate"], "rate_b": b["corpus"]["rate"], **test}


def render_markdown(r: dict[str, Any]) -> str:
    """The result as a short markdown report."""
    m, c, ci = r["metric"].upper(), r["corpus"], r["ci95"]
    fmt = lambda iv: f"[{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "n/a (fewer than 2)"  # noqa: E731
    lines = [
        f"# {m} on {Path(r['manifest']).name}",
        "",
        f"model `{r['model']}`, adapter `{r['adapter'] or 'none'}`, normaliser `{r['normaliser']}`, "
        f"decoding: beam {r['decoding']['beam']}, language {r['decoding']['language']}, "
        f"{r['decoding']['window_seconds']:g} s window",
        "",
        f"**{m} {c['rate']:.4f}** over {c['utterances']} utterances ({c['reference_units']} reference units: "
        f"S {c['substitutions']}, D {c['deletions']}, I {c['insertions']})",
        "",
        f"- 95 % bootstrap interval, resampling utterances: {fmt(ci['utterance'])}",
        f"- 95 % bootstrap interval, resampling speakers ({ci['speakers']}): {fmt(ci['speaker'])}"
        + (" (few speakers: read with care)" if 1 < ci["speakers"] < 10 else ""),
        "",
        f"| speaker | utterances | {m} | S | D | I | units |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["per_speaker"]:
        if s.get("rate") is None:
            lines.append(f"| {s['speaker']} | {s['utterances']} | n/a | | | | 0 |")
            continue
        lines.append(
            f"| {s['speaker']} | {s['utterances']} | {s['rate']:.4f} | {s['substitutions']} | {s['deletions']} | "
            f"{s['insertions']} | {s['reference_units']} |"
        )
    return "\n".join(lines) + "\n"


def evaluate(
    manifest: str,
    model: str = "openai/whisper-base",
    adapter: str | None = None,
    metric: str = "auto",
    normaliser: str = "auto",
    language: str | None = None,
    beam: int = 1,
    batch_size: int = 16,
    window_seconds: float | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load the model (and adapter), decode the manifest and score it.

    The encoder window is ``window_seconds``, else the one the adapter was trained with, else
    the model's own. ``language`` defaults to the manifest's, when all its lines agree.

    Raises:
        SpeechPeftError: bad manifest or audio (file:line), model, adapter or option.
    """
    from ..adapters import read_adapter
    from ..data import check_audio_file, read_manifest
    from ..models import load_host

    utts = read_manifest(manifest)
    for u in utts:  # every header before the model loads: a bad file fails in seconds
        check_audio_file(u.audio, u.where)
    if language is None:
        langs = {u.language for u in utts}
        language = langs.pop() if len(langs) == 1 else None
    metric = auto_metric(language) if metric == "auto" else metric
    normaliser = auto_normaliser(language, metric) if normaliser == "auto" else normaliser
    make_normaliser(normaliser)  # fail on a bad name before loading anything
    host = load_host(model, device=device)
    if adapter is not None:
        recorded = (read_adapter(adapter).record or {}).get("host", {}).get("window_seconds")
        window_seconds = window_seconds or recorded
    if window_seconds:
        host.set_window(window_seconds)
    if adapter is not None:
        host.attach_adapter(adapter)
    for u in utts:
        check_audio_file(u.audio, u.where, max_seconds=host.window_seconds)
        if u.duration < host.min_seconds:
            raise SpeechPeftError(
                f"{u.where}: {u.duration:g} s is shorter than the {host.min_seconds:g} s the model's input layer needs"
            )
    return evaluate_manifest(
        host, utts, manifest=str(manifest), model=model, adapter=adapter, language=language, metric=metric,
        normaliser=normaliser, beam=beam, batch_size=batch_size, progress=progress,
    )  # fmt: skip
