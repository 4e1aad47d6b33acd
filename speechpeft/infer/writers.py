"""Transcript files: txt, srt, vtt, tsv and json, from timed segments."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SpeechPeftError
from ..models import Segment

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


@dataclass(frozen=True)
class SubtitleLayout:
    """How srt/vtt cues are cut from word timestamps, as openai-whisper's writer options are:
    at most ``max_line_width`` characters and ``max_line_count`` lines per cue (with both set,
    cues may cross segments and break at pauses over 3 s), ``max_words_per_line`` words, and
    ``highlight_words``: one cue per word with that word underlined."""

    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None
    highlight_words: bool = False

    def __post_init__(self):
        for key in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise SpeechPeftError(f"--{key.replace('_', '-')} must be >= 1, got {value}")

    @property
    def asked(self) -> bool:
        return self != SubtitleLayout()


def parse_formats(spec: str) -> tuple[str, ...]:
    """``"srt,json"`` or ``"all"`` -> the formats, in FORMATS order.

    Raises:
        ValueError: an unknown format (the message lists the valid ones).
    """
    names = {f.strip().lower() for f in spec.split(",") if f.strip()}
    if "all" in names:
        return FORMATS
    bad = sorted(names - set(FORMATS))
    if bad or not names:
        raise ValueError(f"unknown output format {bad[0] if bad else spec!r}; choose from {', '.join(FORMATS)} or all")
    return tuple(f for f in FORMATS if f in names)


def join_text(texts: Sequence[str]) -> str:
    """Segment texts as one string: a space between words, none between CJK characters."""
    out = ""
    for t in texts:
        t = t.strip()
        if out and t and not (_wide(out[-1]) and _wide(t[0])):
            out += " "
        out += t
    return out


def render(fmt: str, segments: Sequence[Segment], meta: dict[str, Any], layout: SubtitleLayout | None = None) -> str:
    """The file content for one audio file in format ``fmt``; ``meta`` goes into json only;
    ``layout`` cuts srt/vtt cues from the words when the segments carry them."""
    if fmt == "txt":
        return "".join(s.text.strip() + "\n" for s in segments)
    # srt, vtt and tsv follow openai-whisper's writers byte for byte (tested against them): every
    # cue ends with a blank line, "-->" inside a text becomes "->" so that it cannot end a cue
    # line, and VTT leaves out the hours below one hour. With words, cues follow the words.
    if fmt == "srt":
        cues = _cues(segments, layout or SubtitleLayout(), ",", True)
        return "".join(f"{i}\n{a} --> {b}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))
    if fmt == "vtt":
        cues = _cues(segments, layout or SubtitleLayout(), ".", False)
        return "WEBVTT\n\n" + "".join(f"{a} --> {b}\n{text}\n\n" for a, b, text in cues)
    if fmt == "tsv":  # milliseconds
        return "start\tend\ttext\n" + "".join(
            f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text.strip().replace(chr(9), ' ')}\n" for s in segments
        )
    if fmt == "json":
        record = {
            **meta,
            "text": join_text([s.text for s in segments]),
            "segments": [_segment_record(s) for s in segments],
        }
        return json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def _segment_record(s: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
    if s.temperature is not None:
        out["temperature"] = s.temperature
    if s.words:
        out["words"] = [{"start": round(w.start, 3), "end": round(w.end, 3), "word": w.word} for w in s.words]
    return out


def _cues(segments: Sequence[Segment], layout: SubtitleLayout, sep: str, hours: bool) -> list[tuple[str, str, str]]:
    """(start, end, text) of every cue, timestamps formatted."""
    if not (segments and segments[0].words):
        return [(_stamp(s.start, sep, hours), _stamp(s.end, sep, hours), _cue(s.text)) for s in segments]
    out = []
    for cue in _word_cues(segments, layout):
        texts = [text for _, _, text in cue]
        whole = "".join(texts)
        first, last_end = _stamp(cue[0][0], sep, hours), _stamp(cue[-1][1], sep, hours)
        if not layout.highlight_words:
            out.append((first, last_end, whole))
            continue
        shown = first
        for i, (start, end, _) in enumerate(cue):
            a, b = _stamp(start, sep, hours), _stamp(end, sep, hours)
            if shown != a:  # the gap before this word shows the cue unmarked
                out.append((shown, a, whole))
            marked = [re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", t) if j == i else t for j, t in enumerate(texts)]
            out.append((a, b, "".join(marked)))
            shown = b
    return out


def _word_cues(segments: Sequence[Segment], layout: SubtitleLayout) -> Iterator[list[tuple[float, float, str]]]:
    """Words laid into cues of lines. A line takes words while it has room; a new line starts a
    new cue once the cue has ``max_line_count`` lines or after a pause over 3 s (both only when
    width and count are set, the mode in which cues may cross segments); otherwise every segment,
    and every run of ``max_words_per_line`` words in it, starts a cue of its own."""
    within = layout.max_line_count is None or layout.max_line_width is None
    width = layout.max_line_width or 1000
    run = layout.max_words_per_line or 1000
    cue: list[tuple[float, float, str]] = []
    length, lines = 0, 1
    previous = next((s.words[0].start for s in segments if s.words), segments[0].start if segments else 0.0)
    for seg in segments:
        for k, w in enumerate(seg.words):
            text = w.word
            pause = not within and w.start - previous > 3.0
            starts_run = k % run == 0 and bool(cue) and within
            if length > 0 and length + len(text) <= width and not pause and not starts_run:
                length += len(text)
            else:
                text = text.strip()
                ends_cue = bool(cue) and layout.max_line_count is not None and (pause or lines >= layout.max_line_count)
                if ends_cue or starts_run:
                    yield cue
                    cue, lines = [], 1
                elif length > 0:
                    lines += 1
                    text = "\n" + text
                length = len(text.strip())
            cue.append((w.start, w.end, text))
            previous = w.start
    if cue:
        yield cue


def _stamp(seconds: float, sep: str, hours: bool) -> str:
    """HH:MM:SS<sep>mmm; without ``hours``, the hours only from one hour on (WebVTT allows both)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    head = f"{h:02d}:" if hours or h else ""
    return f"{head}{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue(text: str) -> str:
    return text.strip().replace("-->", "->")


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")
