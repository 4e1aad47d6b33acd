"""Target matching, freezing and the adapter-mode guardrail."""

import pytest

from speechpeft import LoRAConfig, S2LoRAConfig, assert_adapter_mode, inject
from speechpeft.adapters import match_targets
from speechpeft.errors import AdapterModeError, SpeechPeftError, TargetError


def test_presets_select_the_documented_modules(tiny_whisper):
    model = tiny_whisper()
    attn = match_targets(model, "attn")
    qv = match_targets(model, "attn_qv")
    every = match_targets(model, "all_linear")
    # 2 encoder layers x 4 (self) + 2 decoder layers x 8 (self + cross)
    assert len(attn) == 24 and len(qv) == 12 and len(every) == 24 + 4 * 2
    assert set(qv) < set(attn) < set(every)
    assert "model.decoder.layers.1.encoder_attn.out_proj" in attn
    assert "proj_out" not in every  # tied to the embeddings


def test_regex_is_a_fullmatch_and_lists_match_names_or_suffixes(tiny_whisper):
    model = tiny_whisper()
    assert match_targets(model, r"model\.encoder\.layers\.0\.fc1") == ["model.encoder.layers.0.fc1"]
    with pytest.raises(TargetError):
        match_targets(model, r"fc1")  # fullmatch: a bare name is not a regex match of a full path
    assert len(match_targets(model, ("fc1",))) == 4  # suffix
    assert match_targets(model, ("model.decoder.layers.1.fc2",)) == ["model.decoder.layers.1.fc2"]


def test_no_match_is_one_line_naming_pattern_candidates_and_presets(tiny_whisper):
    with pytest.raises(TargetError) as e:
        inject(tiny_whisper(), LoRAConfig(targets="decoder.*query"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "'decoder.*query'" in msg and "model.encoder.layers.0.self_attn.k_proj" in msg
    assert "attn_qv" in msg


def test_non_linear_match_and_bad_regex_are_clear_errors(tiny_whisper):
    with pytest.raises(TargetError, match="not nn.Linear"):
        inject(tiny_whisper(), LoRAConfig(targets=r"model\.encoder\.layers\.\d+\.self_attn"))
    with pytest.raises(TargetError, match="not a valid regex"):
        inject(tiny_whisper(), LoRAConfig(targets="(unclosed"))


def test_second_injection_is_refused(tiny_whisper):
    model = tiny_whisper()
    inject(model, LoRAConfig())
    with pytest.raises(SpeechPeftError, match="already holds a lora adapter"):
        inject(model, S2LoRAConfig())


def test_inject_freezes_everything_but_the_adapter(tiny_whisper):
    model = tiny_whisper()
    inject(model, LoRAConfig())
    counts = assert_adapter_mode(model)
    assert counts["trainable"] == counts["adapter"] > 0


def test_guardrail_refuses_an_unfrozen_base(tiny_whisper):
    model = tiny_whisper()
    inject(model, LoRAConfig())
    for p in model.parameters():
        p.requires_grad_(True)
    with pytest.raises(AdapterModeError, match="are trainable"):
        assert_adapter_mode(model)
    with pytest.raises(AdapterModeError, match="holds no adapter"):
        assert_adapter_mode(tiny_whisper())


@pytest.mark.parametrize("bad", [dict(rank=0), dict(alpha=-1), dict(dropout=1.0), dict(targets=[])])
def test_config_validation_names_the_bad_value(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoRAConfig(**bad)
    with pytest.raises(ValueError, match="l1"):
        S2LoRAConfig(l1=1.5)
