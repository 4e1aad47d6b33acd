"""The speechpeft demo page: transcribe with an adapter, compare adapters, clone a voice.

    python demos/app.py [--host 127.0.0.1] [--port 7860] [--adapters DIR_OR_GLOB ...] [--tts-base DIR]
    speechpeft demo ...   (the same options)

It binds to loopback unless --host says otherwise and opens no public share link unless --share
is given. The work is done by speechpeft's public API through service.py; this file lays out
the page and wires its events.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service import Demo, DemoConfig, one_line  # noqa: E402

from speechpeft.eval import NORMALISERS  # noqa: E402

LIMIT_NOTE = "Audio up to {s:g} s and {mb:g} MB; uploads stay in a private temp folder, deleted when the demo stops."
OPS = {  # how each aligned unit of a Compare diff is shown
    "equal": "",
    "substitute": "background:#fde68a",
    "insert": "background:#bbf7d0",
    "delete": "background:#fecaca;text-decoration:line-through",
}
ASR = {"concurrency_id": "asr", "concurrency_limit": 1}  # one decode at a time on the shared hosts
TRAIN = {"concurrency_id": "train", "concurrency_limit": 1}  # one voice trains at a time; others queue


def build(demo: Demo):
    """The Gradio page for ``demo`` (a gr.Blocks, not launched)."""
    import gradio as gr

    from speechpeft.models import whisper_languages

    cfg = demo.config
    languages = [("auto (detect)", "")] + [(f"{name} ({code})", code) for code, name in whisper_languages().items()]
    with gr.Blocks(title="speechpeft demo", delete_cache=(600, 3600)) as page:
        gr.Markdown("# speechpeft\nAdapt speech models with tiny adapters. " + LIMIT_NOTE.format(s=cfg.max_seconds,
                    mb=cfg.max_upload_mb))  # fmt: skip
        with gr.Tab("Transcribe", id="transcribe"):
            t_adapter = _transcribe_tab(gr, demo, languages)
        with gr.Tab("Compare", id="compare"):
            c_adapters = _compare_tab(gr, demo, languages)
        with gr.Tab("Clone a voice", id="clone"):
            _clone_tab(gr, demo)

        def refresh():  # adapters that appeared since the page was built
            choices = _adapter_choices(demo)
            return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices[1:])

        page.load(refresh, None, [t_adapter, c_adapters], api_name=False)
    return page


def _adapter_choices(demo: Demo) -> list[tuple[str, str]]:
    return [("none (bare model)", "")] + [(e.label(), e.name) for e in demo.adapters()]


def _model_picker(gr, demo: Demo, prefix: str):
    models = list(demo.config.asr_models)
    return gr.Dropdown(models, value=models[0], label="base model", elem_id=f"{prefix}-model")


def _transcribe_tab(gr, demo: Demo, languages):
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="audio", elem_id="t-audio")
            model = _model_picker(gr, demo, "t")
            adapter = gr.Dropdown(_adapter_choices(demo), value="", label="adapter", elem_id="t-adapter")
            with gr.Row():
                language = gr.Dropdown(languages, value="", label="language", elem_id="t-lang")
                beam = gr.Slider(1, 5, value=1, step=1, label="beam", elem_id="t-beam")
                vad = gr.Checkbox(False, label="VAD chunking (silero-vad)", elem_id="t-vad")
            go = gr.Button("Transcribe", variant="primary", elem_id="t-go")
        with gr.Column():
            status = gr.Textbox(label="status", interactive=False, elem_id="t-status")
            text = gr.Textbox(label="transcript (segment timestamps)", lines=8, interactive=False, elem_id="t-text")
            files = gr.File(label="downloads: txt, srt, vtt, tsv, json", file_count="multiple", elem_id="t-files")

    def run(audio, model, adapter, language, beam, vad):
        out, err = one_line(lambda: demo.transcribe(audio, model, adapter, language, beam, vad), demo.workspace)
        if err:
            return err, "", None
        segments, _, written = out
        lines = [f"[{_clock(s['start'])} → {_clock(s['end'])}] {s['text'].strip()}" for s in segments]
        return f"done: {len(segments)} segment(s)", "\n".join(lines), [str(f) for f in written]

    go.click(run, [audio, model, adapter, language, beam, vad], [status, text, files], api_name="transcribe", **ASR)
    return adapter


def _compare_tab(gr, demo: Demo, languages):
    n = demo.config.max_compare
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="audio", elem_id="c-audio")
            model = _model_picker(gr, demo, "c")
            label = f"adapters (up to {n}, beside the bare model)"
            adapters = gr.Dropdown(_adapter_choices(demo)[1:], value=[], multiselect=True, max_choices=n, label=label,
                                   elem_id="c-adapters")  # fmt: skip
            with gr.Row():
                language = gr.Dropdown(languages, value="", label="language", elem_id="c-lang")
                beam = gr.Slider(1, 5, value=1, step=1, label="beam", elem_id="c-beam")
            with gr.Row():
                reference = gr.Textbox(label="reference text (optional): WER and a diff per output", elem_id="c-ref",
                                       scale=3)  # fmt: skip
                normaliser = gr.Dropdown(list(NORMALISERS), value="basic", label="normaliser", elem_id="c-norm")
            go = gr.Button("Compare", variant="primary", elem_id="c-go")
        with gr.Column():
            status = gr.Textbox(label="status", interactive=False, elem_id="c-status")
            table = gr.HTML(elem_id="c-table")

    def run(audio, model, adapters, language, beam, reference, normaliser):
        out, err = one_line(lambda: demo.compare(audio, model, adapters, language, beam, reference, normaliser),
                            demo.workspace)  # fmt: skip
        if err:
            return err, ""
        result, scores = out
        how = "one mixed-adapter batch" if result.mixed_batch else "one adapter at a time"
        return f"{len(result.rows)} output(s) in {result.wall_seconds:.2f} s ({how})", _compare_html(result, scores)

    inputs = [audio, model, adapters, language, beam, reference, normaliser]
    go.click(run, inputs, [status, table], api_name="compare", **ASR)
    return adapters


def _clone_tab(gr, demo: Demo):
    cfg = demo.config
    base = cfg.resolved_tts_base()
    gr.Markdown(f"TTS base: `{base}`" if base else "**No TTS base is configured**: start with `--tts-base DIR`.")
    speaker = gr.State(None)
    with gr.Row():
        with gr.Column():
            span = f"{cfg.clone_min_seconds:g}-{cfg.clone_max_seconds:g} s"
            files = gr.File(label=f"reference clips ({span} in all)", file_count="multiple", file_types=["audio"],
                            elem_id="k-files")  # fmt: skip
            recording = gr.Audio(sources=["microphone", "upload"], type="filepath", label="or record", elem_id="k-rec")
            texts = gr.Textbox(lines=4, elem_id="k-texts", label="transcripts (optional): one line per clip, in order; "
                               "empty: Whisper transcribes and cuts the recordings into sentences")  # fmt: skip
            with gr.Row():
                name = gr.Textbox("my-voice", label="voice name", elem_id="k-name")
                steps = gr.Slider(1, 1000, value=cfg.clone_steps, step=1, label="training steps", elem_id="k-steps")
            go = gr.Button("Train the voice", variant="primary", elem_id="k-go")
        with gr.Column():
            status = gr.Textbox(label="status", interactive=False, elem_id="k-status")
            say = gr.Textbox("The quick brown fox jumps over the lazy dog.", label="text to say", elem_id="k-say")
            speak = gr.Button("Speak", elem_id="k-speak")
            spoken = gr.Textbox(label="speech", interactive=False, elem_id="k-spoken")
            audio = gr.Audio(label="the cloned voice", type="numpy", interactive=False, elem_id="k-audio")
            similarity = gr.Markdown(elem_id="k-sim")

    def train(files, recording, texts, name, steps, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        def on_step(step, total, loss):
            progress((step, total), desc=f"training: loss {loss:.3f}")

        paths = [f if isinstance(f, str) else getattr(f, "name", None) for f in (files or [])]
        out, err = one_line(lambda: demo.clone(paths, recording, texts, name, steps, None, on_step), demo.workspace)
        if err:
            return err, None
        key, spk = out
        r = spk.report
        return (
            f"trained {spk.name!r} on {r['references']} clips ({r['reference_seconds']:g} s) in {r['wall_seconds']:g} "
            f"s: {r['trainable_parameters']:,} parameters ({100 * r['fraction_of_base']:.2f} % of the base); "
            f"held-out loss {r['held_out_loss']['before']:.3f} → {r['held_out_loss']['after']:.3f}",
            key,
        )

    def talk(key, text):
        out, err = one_line(lambda: demo.speak(key, text), demo.workspace)
        if err:
            return err, None, ""
        rate, wave, sim = out
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
        return (
            f"spoke {len(wave) / rate:.2f} s",
            (rate, pcm),
            f"Speaker similarity to your references ({sim['verifier']} cosine): **{sim['cloned']:.3f}**; "
            f"the base voice alone: {sim['base']:.3f}",
        )

    go.click(train, [files, recording, texts, name, steps], [status, speaker], api_name="clone", **TRAIN)
    speak.click(talk, [speaker, say], [spoken, audio, similarity], api_name="speak", concurrency_id="tts",
                concurrency_limit=1)  # fmt: skip


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, float(seconds)), 60)
    return f"{int(m):02d}:{s:05.2f}"


def _compare_html(result, scores) -> str:
    rows = []
    for row, score in zip(result.rows, scores, strict=True):
        label = html.escape(row.adapter or "bare model")
        if row.error:
            body, rate = f'<span style="color:#b91c1c">{html.escape(row.error)}</span>', "–"
        elif score is not None:
            body = " ".join(f'<span class="op-{op}" style="{OPS[op]}">{html.escape(u)}</span>' for u, op in score.diff)
            rate = f"{score.rate:.3f}"
        else:
            body, rate = html.escape(row.text), "–"
        rows.append(
            f'<tr class="compare-row"><td><b>{label}</b></td><td class="compare-text">{body}</td><td>{rate}</td></tr>'
        )
    metric = next((s.metric for s in scores if s is not None), "wer").upper()
    head = f"<tr><th>model</th><th>output</th><th>{metric}</th></tr>"
    return f'<table id="compare-table" style="width:100%">{head}{"".join(rows)}</table>'


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other speechpeft error
        self.exit(2, f"speechpeft: error: demo: {message} (see 'speechpeft demo --help')\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="speechpeft demo", description="The speechpeft Gradio demo.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a public Gradio share link (off by default)")
    p.add_argument(
        "--asr-model", action="append", help="Whisper hub id or path, repeatable (default: openai/whisper-base)"
    )
    p.add_argument("--adapters", nargs="+", default=["runs/*/adapter"], help="adapter folders or globs")
    p.add_argument("--tts-base", help="completed VITS voice for cloning (default: runs/joe-completed if present)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="longest audio to transcribe or compare")
    p.add_argument("--max-upload-mb", type=float, default=50.0)
    p.add_argument("--clone-steps", type=int, default=150, help="default training steps for a voice")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        asr_models=tuple(args.asr_model or ["openai/whisper-base"]), adapters=tuple(args.adapters),
        tts_base=args.tts_base, max_seconds=args.max_seconds, max_upload_mb=args.max_upload_mb,
        clone_steps=args.clone_steps, device=args.device,
    )  # fmt: skip


def launch(demo: Demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Serve the page; with ``block=False`` return the running gr.Blocks (tests close it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ["GRADIO_TEMP_DIR"] = str(demo.workspace.root / "gradio")  # uploads live in the workspace too
    page = build(demo)
    page.queue(default_concurrency_limit=1)
    page.launch(
        server_name=host, server_port=port, share=share, max_file_size=f"{demo.config.max_upload_mb:g}mb",
        prevent_thread_lock=not block, show_error=False, quiet=not block,
    )  # fmt: skip
    return page


def main(argv: list[str] | None = None) -> int:
    from speechpeft.errors import SpeechPeftError

    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("speechpeft: error: the demo needs Gradio: pip install 'speechpeft[demo]'", file=sys.stderr)
        return 2
    try:
        demo = Demo(config_from_args(args))
    except SpeechPeftError as e:
        print(f"speechpeft: error: {e}", file=sys.stderr)
        return 2
    try:
        launch(demo, args.host, args.port, args.share)
    except OSError as e:
        print(f"speechpeft: error: cannot serve on {args.host}:{args.port} ({e.strerror or e})", file=sys.stderr)
        return 2
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
