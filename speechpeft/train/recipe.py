"""Recipes: YAML values checked against a typed schema, with ``key=value`` overrides.

A recipe has five sections (model, adapter, data, train, eval). Unknown keys and wrong types are
one-line errors that name the key and the nearest valid ones. Relative data paths are resolved
against the recipe file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from ..adapters import adapter_kind, registered_kinds
from ..adapters.base import config_to_dict
from ..errors import SpeechPeftError
from ..eval.normalise import NORMALISERS

DEFAULT_ADAPTER_KIND = "s2lora"


class RecipeError(SpeechPeftError):
    """A recipe cannot be found, parsed or validated."""


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise RecipeError(f"{key} {message}, got {value!r}")


@dataclass
class ModelSection:
    name: str = "openai/whisper-base"  # hub id or local path; its config.model_type picks the host
    # the longest input in one piece; Whisper: its encoder window, below 30 s is short-window mode
    # (faster, measure CER); the host refuses more than the model takes
    window_seconds: float = 30.0
    device: str = "auto"  # auto (cuda if available), cpu or cuda

    def __post_init__(self):
        _check(self.window_seconds > 0, "model.window_seconds", "must be > 0", self.window_seconds)
        _check(self.device in ("auto", "cpu", "cuda"), "model.device", "must be auto, cpu or cuda", self.device)


@dataclass(frozen=True)
class AdapterSection:
    """The ``adapter`` section: ``kind`` plus the fields of that kind's config dataclass.

    The section is open: every registered kind's config fields are its keys (documented beside
    each field in the kind's own file), so a new kind needs no change here.
    """

    kind: str
    options: dict[str, Any]  # the kind's config fields given in the recipe

    @property
    def fields(self) -> dict[str, Any]:
        """Every field of the kind's config, defaults filled in."""
        return config_to_dict(self.config())

    def config(self) -> Any:
        return adapter_kind(self.kind).config_cls(**self.options)

    @classmethod
    def parse(cls, data: dict[str, Any], kind_overridden: bool = False) -> AdapterSection:
        """Validate an ``adapter`` mapping against its kind's config.

        When the kind was switched by an override, the recipe's keys that only other kinds know
        (``l1`` for s2lora, say) are dropped; otherwise any key the kind does not know is an error.

        Raises:
            RecipeError: unknown kind, unknown key, or a value the kind's config rejects.
        """
        data = dict(data)
        kind = data.pop("kind", DEFAULT_ADAPTER_KIND)
        known = registered_kinds()
        if kind not in known:
            raise RecipeError(f"adapter.kind must be one of {', '.join(known)}, got {kind!r}")
        names = {f.name for f in dataclasses.fields(adapter_kind(kind).config_cls)}
        others = {f.name for k in known for f in dataclasses.fields(adapter_kind(k).config_cls)} - names
        for key in sorted(set(data) - names):
            if kind_overridden and key in others:
                del data[key]
                continue
            near = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            hint = (
                f"nearest valid keys: {', '.join(f'adapter.{n}' for n in near)}"
                if near
                else (f"valid keys: adapter.kind, {', '.join(f'adapter.{n}' for n in sorted(names))}")
            )
            raise RecipeError(f"unknown recipe key 'adapter.{key}' for {kind} adapters; {hint}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        section = cls(kind, values)
        try:
            section.config()
        except (TypeError, ValueError) as e:  # the config names its field; say it the recipe's way
            raise RecipeError(re.sub(r"\b\w+Config\.(\w+)", r"adapter.\1", str(e))) from None
        return section


@dataclass
class DataSection:
    # JSONL manifests, relative to the recipe file or absolute; for `pretrain`, train and dev may
    # also be folders of untranscribed audio, and test is not used
    train: str = MISSING
    dev: str = MISSING
    test: str = ""  # required by finetune
    description: str = ""  # one line for reports
    synthetic: bool = False  # reports and plots then say the results are on synthetic speech


@dataclass
class TrainSection:
    lr: float = 1e-3  # peak AdamW learning rate
    # learning rate x this for modules the host makes new and trains whole (a CTC head over a new
    # vocabulary): a head from scratch learns slowly at an adapter's rate
    new_module_lr_scale: float = 1.0
    max_steps: int = 300  # optimizer updates
    batch_size: int = 8  # utterances per micro-batch; under torchrun the global one, split over the processes
    grad_accum: int = 1  # micro-batches per update
    warmup_steps: int = 20  # linear warm-up, then linear decay to 0 at max_steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    eval_every: int = 100  # dev evaluation (and best-adapter selection) every N updates
    checkpoint_every: int = 50  # resumable checkpoint every N updates
    dev_max_utterances: int = 0  # 0 = the whole dev set
    seed: int = 0
    precision: str = "auto"  # auto: fp32 on CPU, bf16 autocast on CUDA; or fp32, bf16

    def __post_init__(self):
        _check(self.lr > 0, "train.lr", "must be > 0", self.lr)
        _check(self.new_module_lr_scale > 0, "train.new_module_lr_scale", "must be > 0", self.new_module_lr_scale)
        for key in ("max_steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1", getattr(self, key))
        for key in ("warmup_steps", "weight_decay", "max_grad_norm", "dev_max_utterances"):
            _check(getattr(self, key) >= 0, f"train.{key}", "must be >= 0", getattr(self, key))
        _check(
            self.precision in ("auto", "fp32", "bf16"), "train.precision", "must be auto, fp32 or bf16", self.precision
        )


@dataclass
class EvalSection:
    # Whisper language token for training labels and decoding; null: each utterance's own
    # (its manifest's "language"; Whisper detects it where there is none)
    language: Optional[str] = "zh"  # noqa: UP045  (OmegaConf reads typing.Optional, not `str | None`)
    normaliser: str = "zh_chars"  # zh_chars, whisper_en, basic or none
    metric: str = "cer"  # cer or wer
    beam: int = 1  # 1 = greedy
    batch_size: int = 16
    max_tokens_per_second: float = 12.0  # decoding cap: 16 + this x utterance seconds

    def __post_init__(self):
        _check(
            self.normaliser in NORMALISERS,
            "eval.normaliser",
            f"must be one of {', '.join(NORMALISERS)}",
            self.normaliser,
        )
        _check(self.metric in ("cer", "wer"), "eval.metric", "must be cer or wer", self.metric)
        _check(self.beam >= 1, "eval.beam", "must be >= 1", self.beam)
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1", self.batch_size)
        _check(self.max_tokens_per_second > 0, "eval.max_tokens_per_second", "must be > 0", self.max_tokens_per_second)


@dataclass
class PretrainSection:
    """``speechpeft pretrain``: wav2vec 2.0's self-supervised objective (defaults: the paper's)."""

    # full: all but the conv feature encoder, as in the Ainu work; adapter: the recipe's adapter only
    mode: str = "full"
    # false trains the conv stack too (full mode): for a model pretrained from scratch, not for continuing
    freeze_feature_encoder: bool = True
    mask_time_prob: float = 0.65  # fraction of latent frames that start a masked span
    mask_time_length: int = 10  # frames per masked span
    num_negatives: int = 100  # distractors per masked frame
    diversity_weight: float = 0.1  # codebook diversity loss weight
    max_temperature: float = 2.0  # Gumbel temperature at update 0, annealed by temperature_decay per update
    min_temperature: float = 0.5
    temperature_decay: float = 0.999995

    def __post_init__(self):
        _check(self.mode in ("full", "adapter"), "pretrain.mode", "must be full or adapter", self.mode)
        _check(0 < self.mask_time_prob < 1, "pretrain.mask_time_prob", "must be in (0, 1)", self.mask_time_prob)
        for key in ("mask_time_length", "num_negatives"):
            _check(getattr(self, key) >= 1, f"pretrain.{key}", "must be >= 1", getattr(self, key))
        _check(self.diversity_weight >= 0, "pretrain.diversity_weight", "must be >= 0", self.diversity_weight)
        _check(0 < self.min_temperature <= self.max_temperature, "pretrain.min_temperature",
               "must be in (0, max_temperature]", self.min_temperature)  # fmt: skip
        _check(0 < self.temperature_decay <= 1, "pretrain.temperature_decay", "must be in (0, 1]",
               self.temperature_decay)  # fmt: skip


@dataclass
class Recipe:
    name: str = MISSING  # run name: output goes to <output_dir>/<name>/
    output_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    # `kind` plus that kind's config fields (see AdapterSection); parsed after the merge
    adapter: Any = field(default_factory=lambda: {"kind": DEFAULT_ADAPTER_KIND})
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)  # read by `speechpeft pretrain` only


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: ./recipes, then the recipes shipped beside the package."""
    shipped = Path(__file__).resolve().parents[2] / "recipes"
    return list(dict.fromkeys([Path.cwd() / "recipes", shipped]))


def list_recipes() -> dict[str, Path]:
    """Recipe name -> file, from every recipe folder (earlier folders win)."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def find_recipe(name_or_path: str) -> Path:
    """A recipe file by path or by name.

    Raises:
        RecipeError: no such file or name; the message lists the known names.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' does not exist")
        return path
    known = list_recipes()
    if name_or_path not in known:
        near = difflib.get_close_matches(name_or_path, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise RecipeError(f"unknown recipe {name_or_path!r}; available: {', '.join(sorted(known)) or '(none)'}{hint}")
    return known[name_or_path]


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> Recipe:
    """Load, override (``section.key=value``), validate and resolve a recipe.

    Raises:
        RecipeError: unknown name, bad YAML, unknown key, wrong type, invalid or missing value.
    """
    path = find_recipe(name_or_path)
    _check_yaml(path)
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # yaml's errors carry line and column
        raise RecipeError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    cfg = _merge(OmegaConf.structured(Recipe), raw, str(path))
    kind_overridden = False
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
        kind_overridden |= key.strip() == "adapter.kind"
    try:
        recipe = OmegaConf.to_object(cfg)
        if not isinstance(recipe.adapter, dict):
            raise RecipeError(f"adapter must be a mapping with a kind, got {recipe.adapter!r}")
        recipe.adapter = AdapterSection.parse(recipe.adapter, kind_overridden)
    except MissingMandatoryValue as e:
        raise RecipeError(f"{path}: {e.full_key} is required") from None
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    for key in ("train", "dev", "test"):
        if not getattr(recipe.data, key):
            continue  # `pretrain` needs no test split; finetune says so if it is missing
        value = Path(getattr(recipe.data, key))
        setattr(recipe.data, key, str(value if value.is_absolute() else (path.parent / value).resolve()))
    return recipe


MAX_RECIPE_BYTES = 1 << 20
MAX_ALIASES = 64  # anchors are fine for a few shared values; thousands mean an alias bomb


def _check_yaml(path: Path) -> None:
    """Refuse a recipe whose YAML would expand to something huge, before anything expands it.

    Raises:
        RecipeError: the file is over MAX_RECIPE_BYTES, not UTF-8, or uses more than MAX_ALIASES aliases.
    """
    import yaml

    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {size / 2**20:.1f} MiB is too large for a recipe (they hold values only)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: aliases are not expanded
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    mark = event.start_mark
                    raise RecipeError(
                        f"{path}:{mark.line + 1}: more than {MAX_ALIASES} YAML aliases; a recipe holds plain values"
                    )
    except yaml.YAMLError:
        return  # OmegaConf reports the syntax error with its line


def _merge(base: Any, extra: Any, where: str) -> Any:
    try:
        return OmegaConf.merge(base, extra)
    except ConfigKeyError as e:
        key = e.full_key or str(e)
        near = difflib.get_close_matches(key, _all_keys(Recipe), n=3, cutoff=0.5)
        hint = f"; nearest valid keys: {', '.join(near)}" if near else f"; valid sections: {', '.join(_sections())}"
        raise RecipeError(f"{where}: unknown recipe key {key!r}{hint}") from None
    except ValidationError as e:
        first = str(e).splitlines()[0]
        raise RecipeError(f"{where}: bad value for {e.full_key!r} ({first})") from None
    except OmegaConfBaseException as e:
        raise RecipeError(f"{where}: {str(e).splitlines()[0]}") from None


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        if f.name == "adapter" and cls is Recipe:
            kinds = [adapter_kind(k).config_cls for k in registered_kinds()]
            out += sorted({f"adapter.{g.name}" for c in kinds for g in fields(c)} | {"adapter.kind"})
            continue
        sub = f.default_factory if is_dataclass(f.default_factory) else None  # type: ignore[arg-type]
        out += _all_keys(sub, f"{prefix}{f.name}.") if sub else [f"{prefix}{f.name}"]
    return out


def _sections() -> list[str]:
    return [f.name for f in fields(Recipe)]


def recipe_to_yaml(recipe: Recipe) -> str:
    """The effective recipe (defaults filled in) as YAML."""
    adapter = recipe.adapter
    plain = dataclasses.replace(recipe, adapter={"kind": adapter.kind, **adapter.fields})
    return OmegaConf.to_yaml(OmegaConf.structured(plain))
