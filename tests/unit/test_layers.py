"""The import direction kernels <- adapters <- models <- train/eval/infer <- cli holds in every module.

Every import counts, including those inside functions. `data` imports no model code, and
nothing imports `cli`.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "speechpeft"

LOWER = ["base", "kernels", "adapters", "models"]
ALLOWED = {
    "base": {"base"},
    "kernels": {"base", "kernels"},
    "adapters": {"base", "kernels", "adapters"},
    "models": {"base", "kernels", "adapters", "models"},
    "data": {"base", "data"},
    "eval": set(LOWER) | {"data", "eval"},
    "train": set(LOWER) | {"data", "eval", "train"},
    "infer": set(LOWER) | {"data", "infer"},
    "serve": set(LOWER) | {"data", "infer", "serve"},
    "api": set(LOWER) | {"data", "eval", "train", "infer", "api"},  # speechpeft/__init__.py
    "cli": set(LOWER) | {"data", "eval", "train", "infer", "serve", "api", "cli"},
}
BASE_MODULES = {"errors", "fs", "distributed"}


def layer_of(module: str) -> str:
    """'speechpeft.adapters.io' -> 'adapters'; 'speechpeft' -> 'api'; 'speechpeft.errors' -> 'base'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":  # `python -m speechpeft` is the command line
        return "cli"
    return "base" if parts[1] in BASE_MODULES else parts[1]


def imports_of(module: str, source: str, is_package: bool) -> list[str]:
    """Every speechpeft module that ``source`` imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "speechpeft"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "speechpeft":
                found.append(target)
    return found


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """``sources``: module name -> (source, is_package). Returns 'a imports b (x -> y)' lines."""
    bad = []
    for module, (source, is_package) in sorted(sources.items()):
        mine = layer_of(module)
        if mine not in ALLOWED:
            bad.append(f"{module}: unknown layer {mine!r}; add it to ALLOWED")
            continue
        for target in imports_of(module, source, is_package):
            theirs = layer_of(target)
            if theirs not in ALLOWED[mine]:
                bad.append(f"{module} imports {target} ({mine} -> {theirs})")
    return bad


def package_sources() -> dict[str, tuple[str, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return out


def test_no_module_imports_against_the_layer_direction():
    sources = package_sources()
    assert {"speechpeft.adapters.inject", "speechpeft.models.whisper", "speechpeft.models.wav2vec2"} <= set(sources)
    assert violations(sources) == []


def host_imports(sources: dict[str, tuple[str, bool]], layers: tuple[str, ...]) -> list[str]:
    """Imports of one ASR host by name (its module, or a name such as load_whisper from models)
    in modules of ``layers``, which must go through the host protocol (models.host) instead."""
    bad = []
    for module, (source, _) in sorted(sources.items()):
        if layer_of(module) not in layers:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
                bad += [f"{module} imports {n}" for n in names if "whisper" in n.lower() or "wav2vec2" in n.lower()]
            elif isinstance(node, ast.Import):
                bad += [f"{module} imports {a.name}" for a in node.names if "whisper" in a.name or "wav2vec2" in a.name]
    return bad


def test_training_speaks_to_the_host_protocol_only():
    sources = package_sources()
    assert "speechpeft.train.loop" in sources
    assert host_imports(sources, ("train",)) == []
    caught = {
        "speechpeft.train.a": ("from ..models.whisper import WhisperHost\n", False),
        "speechpeft.train.b": ("def f():\n    from ..models import load_whisper\n", False),
        "speechpeft.train.c": ("from ..models import load_host\n", False),
    }
    assert host_imports(caught, ("train",)) == [
        "speechpeft.train.a imports models.whisper",
        "speechpeft.train.a imports WhisperHost",
        "speechpeft.train.b imports load_whisper",
    ]


def test_the_checker_catches_upward_lazy_and_relative_imports():
    bad = {
        "speechpeft.adapters.lora": ("def f():\n    from ..models import whisper\n", False),
        "speechpeft.models.whisper": ("import speechpeft.cli\n", False),
        "speechpeft.data": ("from speechpeft.adapters import inject\n", True),
        "speechpeft.kernels.reference": ("from speechpeft.errors import SpeechPeftError\n", False),
    }
    assert violations(bad) == [
        "speechpeft.adapters.lora imports speechpeft.models (adapters -> models)",
        "speechpeft.data imports speechpeft.adapters (data -> adapters)",
        "speechpeft.models.whisper imports speechpeft.cli (models -> cli)",
    ]
