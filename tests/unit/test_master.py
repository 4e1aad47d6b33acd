"""Master-ASR's invariants on a tiny Whisper and a tiny wav2vec2 CTC model: t = 0 is the base
model, stage 1 and stage 2 train only what they own, files round-trip per language, languages
switch cleanly, and bad stage-2 files or languages are one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

import speechpeft.models  # noqa: F401  (registers both hosts' target presets)
from speechpeft import adapter_layers, inject, load_adapter, save_adapter
from speechpeft.adapters import (
    MasterConfig,
    adapter_condition,
    adapter_parameters,
    before_optimizer_step,
    read_adapter,
)
from speechpeft.adapters.master import MasterLinear
from speechpeft.errors import SpeechPeftError
from speechpeft.train.tuning import AdapterTuning

LANGS = ("de", "en", "fr")


@pytest.fixture(scope="module", params=["whisper", "wav2vec2"])
def host(request):
    """(build(seed) -> a tiny model, a batch it trains on), per host."""
    if request.param == "whisper":
        from conftest import build_tiny_whisper

        g = torch.Generator().manual_seed(123)
        features = torch.randn(3, 80, 100, generator=g)
        batch = {"input_features": features, "labels": torch.randint(4, 96, (3, 7), generator=g)}
        return build_tiny_whisper, batch
    from tiny import build_tiny_wav2vec2, wav2vec2_batch

    return build_tiny_wav2vec2, wav2vec2_batch()


@pytest.fixture(scope="module")
def pool(host, tmp_path_factory):
    """A stage-1 adapter trained once per host (3 updates on de, 3 on fr): its folder."""
    build, batch = host
    folder = tmp_path_factory.mktemp("master")
    stage1(build, batch, folder)
    return folder


def trained(build, pool_dir):
    model = build(seed=0)
    load_adapter(model, pool_dir / "stage1")
    return model


def out(model, batch, language):
    with torch.no_grad(), adapter_condition(model, language=language):
        return model(**batch).logits


def train(model, batch, language, steps=3, lr=1e-2):
    """``steps`` updates with AdamW over every parameter (freezing must hold), with the adapter's
    pre-update hook, as the training loop calls it."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(1, steps + 1):
        opt.zero_grad()
        with adapter_condition(model, language=language):
            model(**batch).loss.backward()
        before_optimizer_step(model, step)
        opt.step()
    model.eval()


def stage1(build, batch, tmp_path, **overrides):
    model = build(seed=0)
    inject(model, MasterConfig(languages=LANGS, specialists=3, **{"t_every": 1, **overrides}))
    train(model, batch, "de")
    train(model, batch, "fr")
    save_adapter(model, tmp_path / "stage1")
    return model


def test_with_t_zero_any_table_and_scores_give_the_base_model_exactly(host):
    build, batch = host
    model = build(seed=0)
    base = {lang: out(model, batch, lang) for lang in LANGS}
    inject(model, MasterConfig(languages=LANGS, sparsity=0.0))
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.scores.normal_()
            layer.table.T.normal_(0, 3)
    for lang in LANGS:
        assert torch.equal(out(model, batch, lang), base[lang])


def test_magnitude_start_masks_t_of_each_weight_whatever_the_table_says(host):
    build, batch = host
    model = build(seed=0)
    inject(model, MasterConfig(languages=LANGS, sparsity=0.3))
    for layer in adapter_layers(model).values():
        w = layer.base_layer.weight
        with adapter_condition(model, language="en"), torch.no_grad():
            kept = layer.masked_weight() != 0
        assert abs(kept.float().mean().item() - 0.7) < 0.01
        assert w.abs()[kept].min() >= w.abs()[~kept].max()  # the smallest magnitudes went


def test_stage1_trains_scores_and_tables_and_tables_only_every_t_every_updates(host):
    build, batch = host
    model = build(seed=0)
    inject(model, MasterConfig(languages=LANGS, specialists=3, t_every=5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    own = {id(p) for p in adapter_parameters(model)}
    train(model, batch, "de")  # 3 updates: scores move, T waits for update 5
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (id(p) in own and name.endswith("scores")), name
    train(model, batch, "de", steps=5)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.endswith("table.T"))


def test_stage2_changes_only_the_new_rows_and_the_ctc_head(host, pool):
    build, batch = host
    tmp_path = pool
    model = build(seed=0)
    head = ("lm_head",) if hasattr(model, "lm_head") and not hasattr(model, "proj_out") else ()
    tuning = AdapterTuning(MasterConfig(new_language="sw", stage1=str(tmp_path / "stage1"), specialists=3), head)
    tuning.attach(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    train(model, batch, "sw")
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    new_rows = [n for n in changed if n.endswith("table.T_new")]
    assert new_rows and all(n.endswith("table.T_new") or n.startswith("lm_head") for n in changed), changed
    assert bool(head) == any(n.startswith("lm_head") for n in changed)
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers()), "the stage-1 pool moved"


def test_save_load_fresh_model_same_outputs_per_language_both_stages(host, pool, tmp_path):
    build, batch = host
    model = stage1(build, batch, tmp_path)  # trained here: the outputs of the model that saved the file
    expected = {lang: out(model, batch, lang) for lang in LANGS}
    assert not torch.equal(expected["de"], expected["fr"])
    fresh = build(seed=0)
    load_adapter(fresh, tmp_path / "stage1")
    for lang in LANGS:
        assert torch.equal(out(fresh, batch, lang), expected[lang])

    two = build(seed=0)
    inject(two, MasterConfig(new_language="sw", stage1=str(tmp_path / "stage1"), specialists=3))
    train(two, batch, "sw", lr=0.5)
    save_adapter(two, tmp_path / "stage2")
    want = {lang: out(two, batch, lang) for lang in (*LANGS, "sw")}
    again = build(seed=0)
    load_adapter(again, tmp_path / "stage2")
    for lang, value in want.items():
        assert torch.equal(out(again, batch, lang), value), lang
    for lang in LANGS:  # the stage-1 languages are untouched by stage 2
        assert torch.equal(want[lang], expected[lang])


def test_two_languages_in_one_process_and_switching_back_is_exact(host, pool):
    build, batch = host
    model = trained(build, pool)
    first = out(model, batch, "de")
    other = out(model, batch, "fr")
    assert not torch.equal(first, other)
    assert torch.equal(out(model, batch, "de"), first)
    with adapter_condition(model, language="fr"), torch.no_grad():  # nested: the inner wins, then the outer is back
        assert torch.equal(out(model, batch, "de"), first)
        assert torch.equal(model(**batch).logits, other)


def test_masks_are_assembled_once_per_language_at_inference(host, pool, monkeypatch):
    build, batch = host
    model = trained(build, pool)
    calls = []
    original = MasterLinear.mask
    monkeypatch.setattr(MasterLinear, "mask", lambda self, i: calls.append(i) or original(self, i))
    layers = len(adapter_layers(model))
    out(model, batch, "de")
    out(model, batch, "de")
    assert len(calls) == layers
    out(model, batch, "fr")
    assert len(calls) == 2 * layers


def test_merged_for_one_language_equals_the_assembled_model(host, pool):
    from speechpeft import unload_adapter

    build, batch = host
    model = trained(build, pool)
    expected = out(model, batch, "fr")
    with adapter_condition(model, language="fr"):
        plain = unload_adapter(model, merge=True)
    assert not adapter_layers(plain)
    torch.testing.assert_close(plain(**batch).logits.detach(), expected, atol=1e-6, rtol=1e-6)


def test_stage2_file_is_one_row_per_layer_and_inspect_shows_it(tmp_path, tiny_batch):
    from conftest import build_tiny_whisper

    stage1(build_tiny_whisper, tiny_batch, tmp_path)
    model = build_tiny_whisper(seed=0)
    inject(model, MasterConfig(new_language="sw", stage1=str(tmp_path / "stage1"), specialists=3))
    save_adapter(model, tmp_path / "stage2")
    af = read_adapter(tmp_path / "stage2")
    layers = 2 + 2  # tiny Whisper: 2 encoder + 2 decoder layers
    assert sum(t.numel() for t in af.tensors.values()) == layers * 3
    assert af.config.stage1_sha256 == read_adapter(tmp_path / "stage1").record["tensors_sha256"]
    shown = subprocess.run([sys.executable, "-m", "speechpeft", "adapters", "inspect", str(tmp_path / "stage2"),
                            "--json"], capture_output=True, text=True, check=True)  # fmt: skip
    info = json.loads(shown.stdout)
    assert info["details"]["new_row_floats"] == layers * 3 and info["parameters"]["stored"] == layers * 3


def _one_line(excinfo, *parts):
    text = str(excinfo.value)
    assert "\n" not in text and all(p in text for p in parts), text


def test_bad_stage2_and_languages_are_one_line_errors(tmp_path, tiny_batch):
    from conftest import build_tiny_whisper

    stage1(build_tiny_whisper, tiny_batch, tmp_path)
    model = build_tiny_whisper(seed=0)
    inject(model, MasterConfig(new_language="sw", stage1=str(tmp_path / "stage1"), specialists=3))
    save_adapter(model, tmp_path / "stage2")

    with pytest.raises(SpeechPeftError) as e, adapter_condition(model, language="xx"):
        pass
    _one_line(e, "unknown language 'xx'", "de, en, fr, sw")
    with pytest.raises(SpeechPeftError) as e, torch.no_grad():
        model(**tiny_batch)  # no language chosen
    _one_line(e, "pass a language")

    stage2 = tmp_path / "stage2"
    (tmp_path / "stage1").rename(tmp_path / "moved")
    with pytest.raises(SpeechPeftError) as e:
        load_adapter(build_tiny_whisper(seed=0), stage2)
    _one_line(e, "stage-1", "does not exist")
    stage1(build_tiny_whisper, tiny_batch, tmp_path, seed=5)  # another stage 1 at the same path
    fresh = build_tiny_whisper(seed=0)
    with pytest.raises(SpeechPeftError) as e:
        load_adapter(fresh, stage2)
    _one_line(e, "not the stage-1 adapter this one was trained on")
    assert not adapter_layers(fresh)  # nothing half-injected is left behind

    for bad in (1.0, -0.1):
        with pytest.raises(ValueError) as e:
            MasterConfig(languages=LANGS, sparsity=bad)
        _one_line(e, "sparsity must be in [0, 1)")


def test_recipe_values_are_checked_in_one_line_naming_the_key():
    from speechpeft.train import load_recipe
    from speechpeft.train.recipe import RecipeError

    for args, message in (
        (["adapter.sparsity=1"], "adapter.sparsity must be in [0, 1)"),
        (["adapter.languages=[en,en]"], "adapter.languages lists a language twice"),
        (["adapter.new_language=pl"], "adapter.new_language needs stage1"),
        (["adapter.t_every=0"], "adapter.t_every must be a positive integer"),
    ):
        with pytest.raises(RecipeError) as e:
            load_recipe("master_asr_stage1", args)
        _one_line(e, message)
    stage2 = load_recipe("master_asr_stage2").adapter.config()
    assert stage2.stage == 2 and stage2.new_language == "pl"


def test_export_merge_language_writes_the_assembled_model_as_plain_weights(tmp_path, tiny_whisper_dir, tiny_batch):
    from transformers import WhisperForConditionalGeneration

    from speechpeft.models import load_whisper
    from speechpeft.models.export import export

    host = load_whisper(str(tiny_whisper_dir), device="cpu")
    host.inject(MasterConfig(languages=("en", "zh"), specialists=2, t_every=1))
    batch = {"input_features": torch.randn(2, 80, host.model.config.max_source_positions * 2),
             "labels": tiny_batch["labels"][:2]}  # fmt: skip
    train(host.model, batch, "zh")
    want = out(host.model, batch, "zh")
    save_adapter(host.model, tmp_path / "adapter")
    with pytest.raises(SpeechPeftError) as e:
        export(tmp_path / "adapter", tmp_path / "none", "hf")
    _one_line(e, "pass a language (--language")
    assert not (tmp_path / "none").exists()
    export(tmp_path / "adapter", tmp_path / "zh", "hf", language="zh")
    plain = WhisperForConditionalGeneration.from_pretrained(tmp_path / "zh").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(plain(**batch).logits, out(host.model, batch, "en"), atol=1e-4)
