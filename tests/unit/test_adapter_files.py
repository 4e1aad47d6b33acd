"""Adapter files: what is recorded, and a one-line error for every way a file can be wrong."""

import json

import pytest
import torch
from safetensors.torch import save_file

from speechpeft import LoRAConfig, S2LoRAConfig, adapter_layers, inject, load_adapter, read_adapter, save_adapter
from speechpeft.cli import main
from speechpeft.errors import AdapterFileError, BaseMismatchError


def saved(tiny_whisper, tmp_path, config=None, name="tiny/base-a"):
    model = tiny_whisper(seed=0)
    model.config._name_or_path = name
    inject(model, config or LoRAConfig(rank=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    return save_adapter(model, tmp_path / "adapter")


def one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_record_holds_kind_config_base_and_fingerprint(tiny_whisper, tmp_path):
    af = read_adapter(saved(tiny_whisper, tmp_path, S2LoRAConfig(rank=4)))
    assert af.kind == "s2lora" and af.config == S2LoRAConfig(rank=4, targets=af.config.targets)
    rec = af.record
    assert rec["base_model"] == "tiny/base-a"
    assert len(rec["fingerprint"]["structure"]) == 12 and len(rec["fingerprint"]["probe"]) == len(rec["targets"])
    assert rec["targets"]["model.encoder.layers.0.self_attn.q_proj"] == [64, 64]
    on_disk = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert on_disk["speechpeft_kind"] == "s2lora" and on_disk["rank"] == 4
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_other_architecture_is_refused_naming_both_bases(tiny_whisper, tmp_path):
    path = saved(tiny_whisper, tmp_path)
    other = tiny_whisper(seed=0, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    other.config._name_or_path = "tiny/base-b"
    with pytest.raises(BaseMismatchError) as e:
        load_adapter(other, path)
    msg = one_line(e)
    assert "'tiny/base-a'" in msg and "'tiny/base-b'" in msg and "shaped differently" in msg


def test_same_architecture_other_weights_is_refused_unless_asked(tiny_whisper, tmp_path):
    path = saved(tiny_whisper, tmp_path)
    other = tiny_whisper(seed=5)
    with pytest.raises(BaseMismatchError) as e:
        load_adapter(other, path)
    assert "different weights" in one_line(e)
    assert not adapter_layers(other)  # a refused load leaves the model untouched
    assert load_adapter(other, path, check_base=False)


def test_flipped_tensor_bytes_fail_the_checksum(tiny_whisper, tmp_path):
    path = saved(tiny_whisper, tmp_path)
    f = path / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(AdapterFileError) as e:
        load_adapter(tiny_whisper(seed=0), path)
    assert "checksum" in one_line(e)


@pytest.mark.parametrize("keep", [0.5, 0.01])  # inside the tensors, inside the header
def test_truncated_file_is_a_clear_error(tiny_whisper, tmp_path, keep):
    path = saved(tiny_whisper, tmp_path)
    f = path / "adapter_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AdapterFileError) as e:
        read_adapter(path)
    assert "truncated or corrupt" in one_line(e)


def test_missing_directory_file_instead_of_directory_and_empty_directory(tmp_path):
    with pytest.raises(AdapterFileError, match="does not exist"):
        read_adapter(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdapterFileError, match="not a directory"):
        read_adapter(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterFileError, match="holds no adapter_model.safetensors"):
        read_adapter(tmp_path / "empty")


def test_foreign_peft_file_with_nan_or_bad_json_is_refused(tmp_path):
    d = tmp_path / "peft"
    d.mkdir()
    save_file(
        {
            "base_model.model.x.lora_A.weight": torch.full((2, 4), float("nan")),
            "base_model.model.x.lora_B.weight": torch.zeros(4, 2),
        },
        str(d / "adapter_model.safetensors"),
    )
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2,\n "lora_alpha": 4,,}')
    with pytest.raises(AdapterFileError) as e:
        read_adapter(d)
    assert "adapter_config.json:2: invalid JSON" in one_line(e)
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2, "lora_alpha": 4}')
    with pytest.raises(AdapterFileError, match="NaN"):
        read_adapter(d)
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": true}')
    with pytest.raises(AdapterFileError, match="use_dora"):
        read_adapter(d)


def test_cli_prints_one_line_and_exits_2_on_a_bad_file(tiny_whisper, tmp_path, capsys):
    path = saved(tiny_whisper, tmp_path)
    f = path / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert main(["adapters", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("speechpeft: error:") and "\n" not in err and "Traceback" not in err


def test_save_replaces_files_atomically_and_leaves_no_temp_files(tiny_whisper, tmp_path):
    path = saved(tiny_whisper, tmp_path)
    model = tiny_whisper(seed=0)
    inject(model, LoRAConfig(rank=2))
    save_adapter(model, path)  # overwrite with a different adapter
    assert read_adapter(path).config.rank == 2
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_a_write_that_fails_midway_keeps_the_old_file(tiny_whisper, tmp_path, monkeypatch):
    path = saved(tiny_whisper, tmp_path)
    before = (path / "adapter_model.safetensors").read_bytes()
    model = tiny_whisper(seed=0)
    inject(model, LoRAConfig(rank=2))

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("speechpeft.adapters.io.save_file", crash)
    with pytest.raises(OSError):
        save_adapter(model, path)
    assert (path / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
