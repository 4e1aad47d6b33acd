"""The ct2 engine's cache and its choice (speechpeft/infer/ct2_engine.py, infer/transcribe.py), on a
tiny Whisper. faster-whisper decodes 30 s windows only, which the tiny model does not have: decoding
is tested on the real whisper-base (tests/integration/test_ct2_engine_real.py)."""

import json
import sys

import pytest
from test_transcribe import make_adapter, setup  # noqa: F401 (setup: a fixture)

from speechpeft.cli import main
from speechpeft.infer import ct2_engine
from speechpeft.infer.ct2_engine import converted

pytest.importorskip("ctranslate2", reason="ctranslate2 is a test dependency")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHPEFT_CACHE", str(tmp_path / "cache"))
    exports = []
    from speechpeft.models import export as export_module

    original = export_module.write_ct2

    def spy(adapter, *args, **kwargs):
        if adapter is not None:
            exports.append(str(adapter))
        return original(adapter, *args, **kwargs)

    monkeypatch.setattr(export_module, "write_ct2", spy)
    return tmp_path / "cache" / "ct2", exports


def test_a_conversion_is_reused_and_redone_when_the_adapter_changes(tiny_whisper_dir, tmp_path, cache):
    root, exports = cache
    adapter = make_adapter(tiny_whisper_dir, tmp_path / "adapter", seed=0)
    first = converted(str(adapter), str(tiny_whisper_dir), "int8")
    assert (first / "model.bin").is_file() and exports == [str(adapter)]
    assert converted(str(adapter), str(tiny_whisper_dir), "int8") == first and len(exports) == 1  # reused
    other = converted(str(adapter), str(tiny_whisper_dir), "float32")  # another compute type: its own folder
    assert other != first and len(exports) == 2
    make_adapter(tiny_whisper_dir, tmp_path / "adapter", seed=1)  # the same folder, new weights
    changed = converted(str(adapter), str(tiny_whisper_dir), "int8")
    assert changed != first and len(exports) == 3
    assert not first.exists() and not other.exists()  # conversions of its older files go, whatever their type
    assert sorted(p.name for p in root.iterdir()) == [changed.name]
    bare = converted(None, str(tiny_whisper_dir), "int8")  # the bare model converts without an adapter
    assert (bare / "model.bin").is_file() and len(exports) == 3 and changed.exists()
    assert json.loads((bare / "speechpeft_source.json").read_text())["source"] == f"bare:{tiny_whisper_dir}"


def test_an_unavailable_engine_is_one_line_and_auto_falls_back_to_torch(
    setup,  # noqa: F811
    tiny_whisper_dir,
    tmp_path,
    capsys,
    monkeypatch,
):
    root, audio, adapters = setup
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # `import faster_whisper` raises ImportError
    base = ["transcribe", "--model", str(tiny_whisper_dir), "--adapter", str(adapters[0]), "--language", "en",
            "--no-progress", "-f", "json", str(audio[0])]  # fmt: skip
    assert main([*base, "--engine", "ct2", "-o", str(tmp_path / "ct2")]) == 2
    err = capsys.readouterr().err
    assert err == f"speechpeft: error: --engine ct2 needs CTranslate2 and faster-whisper: {ct2_engine.INSTALL}\n"
    assert main([*base, "--engine", "auto", "-o", str(tmp_path / "auto")]) == 0
    assert json.loads((tmp_path / "auto" / f"{audio[0].stem}.json").read_text())["engine"] == "torch"


def test_ct2_refuses_what_it_cannot_serve_and_auto_takes_torch_there(setup, tiny_whisper_dir, tmp_path, capsys):  # noqa: F811
    root, audio, adapters = setup
    base = ["transcribe", "--model", str(tiny_whisper_dir), "--language", "en", "--no-progress", "-f", "json",
            str(audio[0])]  # fmt: skip
    cases = [
        (["--adapter", str(adapters[0]), "--window-seconds", "2"],
         "--engine ct2 decodes 30 s windows; --window-seconds needs --engine torch"),
        (["--adapter", str(adapters[0]), "--device", "cuda"],
         "--engine ct2 runs on the CPU; on a GPU use --engine torch"),
        (["--adapter", str(adapters[0])],
         f"--engine ct2 decodes 30 s windows (faster-whisper); '{tiny_whisper_dir}' has a 3 s window"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *extra, "--engine", "ct2", "-o", str(tmp_path / "x")]) == 2, extra
        assert capsys.readouterr().err == f"speechpeft: error: {message}\n", extra
    # auto: a model whose window is not 30 s, in a mixed-adapter batch and with one adapter, goes to torch
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({audio[0].name: str(adapters[0]), audio[1].name: str(adapters[1])}))
    args = ["transcribe", "--model", str(tiny_whisper_dir), "--language", "en", "--no-progress", "-f", "json",
            "--adapter-map", str(mapping), "--engine", "auto", "-o", str(tmp_path / "mixed"), str(audio[0]),
            str(audio[1])]  # fmt: skip
    assert main(args) == 0
    assert {json.loads(p.read_text())["engine"] for p in (tmp_path / "mixed").glob("*.json")} == {"torch"}
    assert main([*base, "--adapter", str(adapters[0]), "--engine", "auto", "-o", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "one" / f"{audio[0].stem}.json").read_text())["engine"] == "torch"
