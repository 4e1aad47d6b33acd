"""Transcript files: txt, srt, vtt, tsv and json, from timed segments."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

from ..models import Segment

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


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


def render(fmt: str, segments: Sequence[Segment], meta: dict[str, Any]) -> str:
    """The file content for one audio file in format ``fmt``; ``meta`` goes into json only."""
    if fmt == "txt":
        return "".join(s.text.strip() + "\n" for s in segments)
    # srt, vtt and tsv follow openai-whisper's writers byte for byte (tested against them): every
    # cue ends with a blank line, "-->" inside a text becomes "->" so that it cannot end a cue
    # line, and VTT leaves out the hours below one hour.
    if fmt == "srt":
        return "".join(
            f"{i}\n{_stamp(s.start, ',', True)} --> {_stamp(s.end, ',', True)}\n{_cue(s.text)}\n\n"
            for i, s in enumerate(segments, 1)
        )
    if fmt == "vtt":
        cues = [f"{_stamp(s.start, '.', False)} --> {_stamp(s.end, '.', False)}\n{_cue(s.text)}\n\n" for s in segments]
        return "WEBVTT\n\n" + "".join(cues)
    if fmt == "tsv":  # milliseconds
        return "start\tend\ttext\n" + "".join(
            f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text.strip().replace(chr(9), ' ')}\n" for s in segments
        )
    if fmt == "json":
        record = {
            **meta,
            "text": join_text([s.text for s in segments]),
            "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in segments],
        }
        return json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


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
