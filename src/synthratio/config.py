"""Typed view of params.yaml: one frozen dataclass per section.

Every setting the pipeline reads lives in params.yaml; stages load it through `load_params` first thing,
before their heavy imports, and it raises one ParamsError listing every unknown key (with the closest known
one), missing key and bad value. Light on purpose (yaml and the standard library): a typo fails in a second.
Each setting's meaning is written once, in params.yaml's comment for its key; the fields here note units and limits.

Check a params file, with `dvc exp run -S` overrides, before queueing experiments:
`python -m synthratio.config [-S key=value ...] [params.yaml]`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

# The allowed values of every enum-like setting, once: fields annotated with these are checked against them
# (_check_choices), and the tuples are what other modules iterate over.
ClassName = Literal["CNV", "DME", "DRUSEN", "NORMAL"]
ClassNames = ClassName | tuple[ClassName, ...]  # one class (YAML: CNV) or several (YAML: [DME, DRUSEN])
Sampler = Literal["ddpm", "ddim", "dpmsolver++", "euler", "unipc"]
TimestepSpacing = Literal["leading", "trailing", "linspace"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"]
PredictionType = Literal["epsilon", "v_prediction"]
TimestepSampling = Literal["uniform", "logit_normal"]
LrSchedule = Literal["constant", "cosine"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Arch = Literal["simple_cnn", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"]
MixMode = Literal["replace", "add", "data"]
ReportMetric = Literal["accuracy", "log_loss", "auroc"]
Preset = Literal["recipe", "smoke", "rehearsal"]
Geometry = Literal["squeeze", "crop", "pad"]

CLASS_NAMES = get_args(ClassName)
SAMPLERS = get_args(Sampler)
TIMESTEP_SPACINGS = get_args(TimestepSpacing)
BETA_SCHEDULES = get_args(BetaSchedule)
PREDICTION_TYPES = get_args(PredictionType)
PRETRAINED = "pretrained"  # finetune.beta_schedule / prediction_type, latent backend: the pretrained scheduler's own
TIMESTEP_SAMPLINGS = get_args(TimestepSampling)
LR_SCHEDULES = get_args(LrSchedule)
MIXED_PRECISIONS = get_args(MixedPrecision)
ARCHS = get_args(Arch)
MIX_MODES = get_args(MixMode)
MAX_ADD_RATIO = 1000  # mix.mode add: at most 10 synthetic examples per real slot of the class
REPORT_METRICS = get_args(ReportMetric)
GEOMETRIES = get_args(Geometry)
SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a source's name names its survey file and DVC stage


def max_ratio(mode: str) -> int:
    """The largest R of a mix mode: replace swaps at most every slot of the class, add stacks up to
    MAX_ADD_RATIO, data fills at most every left-out scan."""
    return MAX_ADD_RATIO if mode == "add" else 100


class ParamsError(ValueError):
    """params.yaml values that the pipeline cannot use, one error per line."""


# While params_from_dict builds Params, the checks below note their errors here and go on, so that one
# ParamsError lists them all; a dataclass built directly (tests, dataclasses.replace) raises at the first.
_errors: ContextVar[list[str] | None] = ContextVar("params_errors", default=None)


def _report(message: str) -> None:
    """Raise ParamsError(message), or note it (once) while params_from_dict collects. The checks after a
    report still run then, so none may rely on an earlier one having stopped it."""
    errors = _errors.get()
    if errors is None:
        raise ParamsError(message)
    if message not in errors:
        errors.append(message)


@contextlib.contextmanager
def _collecting() -> Iterator[list[str]]:
    """The errors reported inside the block, in order, instead of the first one raised."""
    errors: list[str] = []
    token = _errors.set(errors)
    try:
        yield errors
    finally:
        _errors.reset(token)


def _message(section: str, key: str, value: Any, allowed: str) -> str:
    return f"params.yaml: {section}.{key}={value!r}; expected {allowed}"


def _fail(section: str, key: str, value: Any, allowed: str) -> None:
    _report(_message(section, key, value, allowed))


def _require_positive(section: str, obj: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if value <= 0:
            _fail(section, key, value, "a positive number")


def _require_fraction(section: str, obj: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not 0.0 <= value < 1.0:
            _fail(section, key, value, "a fraction in [0, 1)")


@functools.cache
def _choices(cls: type) -> dict[str, tuple[str, ...]]:
    """The Literal-annotated fields of a config class (a tuple of them too) and the values each allows."""
    choices = {}
    for name, hint in typing.get_type_hints(cls).items():
        if get_origin(hint) in (typing.Union, types.UnionType):  # ClassNames: the choices are its Literal's
            hint = next((option for option in get_args(hint) if get_origin(option) is Literal), hint)
        if get_origin(hint) is tuple:
            hint = get_args(hint)[0]
        if get_origin(hint) is Literal:
            choices[name] = get_args(hint)
    return choices


def _check_choices(section: str, obj: Any) -> None:
    """Every Literal-annotated field of obj holds one of the values its annotation allows."""
    for key, choices in _choices(type(obj)).items():
        value = getattr(obj, key)
        if any(item not in choices for item in (value if isinstance(value, tuple) else (value,))):
            _fail(section, key, list(value) if isinstance(value, tuple) else value, f"one of {sorted(choices)}")


@dataclass(frozen=True)
class PathsConfig:
    raw: dict[str, Path]  # source name -> folder, one or more
    sources: Path
    prepared: Path
    diffusion_model: Path
    synthetic: Path
    classifiers: Path
    predictions: Path
    live: Path
    metrics: Path
    plots: Path

    def __post_init__(self) -> None:
        if not self.raw:
            _fail("paths", "raw", self.raw, "one or more sources, name: folder (e.g. {kermany: data/raw})")
        for name in self.raw:
            if not SOURCE_NAME.fullmatch(name):
                _fail("paths", "raw", name, "source names of letters, digits, '_' and '-' (they name files and stages)")


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # 0 = torch's default
    progress: bool = True
    launcher: str = "python"  # python, accelerate launch [options] or torchrun [options]
    gpu_locks: str = "/tmp/synthratio-gpus"  # folder of the per-GPU lock files (devices.pin_one_gpu)

    def __post_init__(self) -> None:
        _check_choices("runtime", self)
        if self.threads < 0:
            _fail("runtime", "threads", self.threads, "0 (torch's default) or a positive count")
        words = str(self.launcher).split() or [""]
        python = Path(words[0]).name.startswith("python")  # python, python3, /opt/venv/bin/python3.11
        if not python and words[0] != "torchrun" and words[:2] != ["accelerate", "launch"]:
            _fail(
                "runtime", "launcher", self.launcher, "'python', 'accelerate launch [options]' or 'torchrun [options]'"
            )


@dataclass(frozen=True)
class PhantomConfig:
    seed: int
    patients: dict[str, int]  # split (train, val, test) -> count >= 0
    scans_per_patient: int
    widths: tuple[int, ...]  # px, one or more
    height: int  # px
    classes: tuple[str, ...]  # a subset of CNV, NORMAL
    workers: int = 0  # 0 = every core

    def __post_init__(self) -> None:
        _require_positive("phantom", self, "scans_per_patient", "height")
        if self.workers < 0:
            _fail("phantom", "workers", self.workers, "0 (every core) or a positive count")
        if not self.widths or min(self.widths) <= 0:
            _fail("phantom", "widths", list(self.widths), "one or more positive widths in px")
        for split, count in self.patients.items():
            if split not in ("train", "val", "test") or count < 0:
                _fail("phantom", f"patients.{split}", count, "a count >= 0 for split train, val or test")
        for name in self.classes:
            if name not in ("CNV", "NORMAL"):
                _fail("phantom", "classes", self.classes, "a subset of ['CNV', 'NORMAL'] (the phantom simulates those)")


@dataclass(frozen=True)
class PrepareConfig:
    classes: tuple[str, ...]  # two or more distinct CLASS_NAMES
    split: Literal["patient", "official"]
    val_fraction: float  # fraction in [0, 1); val_fraction + test_fraction < 1
    test_fraction: float  # fraction in [0, 1)
    seed: int
    mask_wedges: bool
    on_bad_file: Literal["error", "skip"]
    workers: int  # 0 = every core
    file_pattern: str  # regex fullmatched to a file name's stem; group `patient`, optional group `label`
    geometry: Geometry
    max_upscale: float  # >= 1; how far a scan may be enlarged to the largest prepared size

    def __post_init__(self) -> None:
        _check_choices("prepare", self)
        try:
            groups = set(re.compile(self.file_pattern).groupindex)
        except re.error as error:
            _fail("prepare", "file_pattern", self.file_pattern, f"a regular expression ({error})")
        else:
            if "patient" not in groups or groups - {"patient", "label"}:
                allowed = "a regex with a group (?P<patient>...) and optionally (?P<label>...), no other named group"
                _fail("prepare", "file_pattern", self.file_pattern, allowed)
        _require_fraction("prepare", self, "val_fraction", "test_fraction")
        if self.val_fraction + self.test_fraction >= 1.0:
            _fail("prepare", "val_fraction + test_fraction", self.val_fraction + self.test_fraction, "< 1")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            _fail("prepare", "classes", self.classes, f"two or more distinct names from {list(CLASS_NAMES)}")
        for name in self.classes:
            if name not in CLASS_NAMES:
                _fail("prepare", "classes", self.classes, f"names from {list(CLASS_NAMES)}")
        if self.workers < 0:
            _fail("prepare", "workers", self.workers, "0 (every core) or a positive count")
        if not self.max_upscale >= 1.0:
            _fail("prepare", "max_upscale", self.max_upscale, "a factor >= 1 (1: never enlarge a scan)")


@dataclass(frozen=True)
class FinetuneConfig:
    backend: Literal["pixel", "latent"]
    target_class: ClassNames  # = sweep.synthetic_class; several need class_conditional
    image_size: int  # px, square; latent: a multiple of 8; pixel: of 2^(UNet levels - 1)
    pretrained: str  # latent: a folder with model_index.json or a hub id owner/name
    prompts: tuple[str, ...]  # latent: one or more, non-empty
    lora_rank: int  # >= 0; 0 = whole UNet
    max_images: int  # scans; 0 = all
    class_conditional: bool
    block_channels: tuple[int, ...]
    layers_per_block: int
    train_timesteps: int
    beta_schedule: str  # a BetaSchedule, or PRETRAINED (latent only); checked below
    zero_terminal_snr: bool  # needs prediction_type v_prediction
    prediction_type: str  # a PredictionType, or PRETRAINED (latent only); checked below
    snr_gamma: float  # >= 0; 0 = plain MSE
    noise_offset: float  # >= 0; 0 = off
    timestep_sampling: TimestepSampling
    steps: int
    batch_size: int
    learning_rate: float
    lr_schedule: LrSchedule
    warmup_steps: int  # steps; fewer than `steps`
    ema_decay: float  # in [0, 1); 0 = off
    mixed_precision: MixedPrecision
    gradient_checkpointing: bool
    checkpoint_every: int  # steps; 0 = none
    seed: int = 0  # weight init, data order, noise: stage finetune sets it from sweep.generator_seeds, not params.yaml
    label_dropout: float = 0.0  # fraction in [0, 1); > 0 needs class_conditional and the pixel backend

    def __post_init__(self) -> None:
        _check_choices("finetune", self)
        for key, choices in (("beta_schedule", BETA_SCHEDULES), ("prediction_type", PREDICTION_TYPES)):
            value = getattr(self, key)
            if value == PRETRAINED and self.backend == "pixel":
                _fail(
                    "finetune",
                    key,
                    value,
                    f"one of {sorted(choices)} for the pixel backend ({PRETRAINED!r}, the "
                    "pretrained scheduler's own, is for the latent backend: the pixel UNet starts from scratch)",
                )
            if value not in (*choices, PRETRAINED):
                _fail(
                    "finetune",
                    key,
                    value,
                    f"one of {sorted(choices)}, or {PRETRAINED!r} (latent backend: the pretrained scheduler's own)",
                )
        _require_positive(
            "finetune",
            self,
            "image_size",
            "layers_per_block",
            "train_timesteps",
            "steps",
            "batch_size",
            "learning_rate",
        )
        for key in ("lora_rank", "max_images", "warmup_steps", "checkpoint_every"):
            if getattr(self, key) < 0:
                _fail("finetune", key, getattr(self, key), "a count >= 0")
        for key in ("snr_gamma", "noise_offset"):
            if getattr(self, key) < 0:
                _fail("finetune", key, getattr(self, key), "a number >= 0 (0 = off)")
        if not 0 <= self.ema_decay < 1:
            _fail("finetune", "ema_decay", self.ema_decay, "a decay in [0, 1) (0 = no EMA)")
        if not 0 <= self.label_dropout < 1:
            _fail("finetune", "label_dropout", self.label_dropout, "a fraction in [0, 1) (0 = no null class)")
        if self.label_dropout and not (self.class_conditional and self.backend == "pixel"):
            _fail(
                "finetune",
                "label_dropout",
                self.label_dropout,
                "0 unless class_conditional is true with the pixel backend (it drops class labels)",
            )
        if len(self.target_classes) != len(set(self.target_classes)):
            _fail("finetune", "target_class", list(self.target_classes), "distinct classes")
        if len(self.target_classes) > 1 and not (self.class_conditional and self.backend == "pixel"):
            _fail(
                "finetune",
                "target_class",
                list(self.target_classes),
                "one class unless class_conditional is true with the pixel backend (one model samples each class)",
            )
        if self.warmup_steps >= self.steps:
            _fail("finetune", "warmup_steps", self.warmup_steps, f"fewer than finetune.steps ({self.steps})")
        # prediction_type 'pretrained' is checked once the latent backend has replaced it by the pipeline's own
        if self.zero_terminal_snr and self.prediction_type not in ("v_prediction", PRETRAINED):
            _fail(
                "finetune",
                "zero_terminal_snr",
                True,
                "false unless prediction_type is v_prediction (epsilon is undefined at SNR 0)",
            )
        if self.backend == "latent":
            _check_pretrained(self.pretrained)
            if not self.prompts or not all(prompt.strip() for prompt in self.prompts):
                _fail("finetune", "prompts", list(self.prompts), "one or more non-empty prompts")
            if self.image_size % 8:
                _fail("finetune", "image_size", self.image_size, "a multiple of 8 (the VAE downsamples 8x)")
        else:
            levels = len(self.block_channels)
            if levels < 1 or self.image_size % (2 ** (levels - 1)):
                _fail(
                    "finetune",
                    "image_size",
                    self.image_size,
                    f"a multiple of {2 ** (levels - 1)} for {levels} UNet levels",
                )

    @property
    def target_classes(self) -> tuple[str, ...]:
        """target_class as a tuple: the classes the generator samples, in order."""
        return _as_tuple(self.target_class)


def _as_tuple(classes: str | tuple[str, ...]) -> tuple[str, ...]:
    return classes if isinstance(classes, tuple) else (classes,)


def _as_written(classes: str | tuple[str, ...]) -> str | list[str]:
    """A ClassNames value as params.yaml writes it, for messages."""
    return list(classes) if isinstance(classes, tuple) else classes


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_pretrained(pretrained: str) -> None:
    """A local folder with model_index.json, or a hub id (owner/name) that the latent backend downloads."""
    folder = Path(pretrained).expanduser()
    if not pretrained:  # Path("") is the working folder: no further check
        _fail(
            "finetune",
            "pretrained",
            pretrained,
            "a Stable Diffusion pipeline: a local folder or a hub id like 'owner/name'",
        )
    elif folder.is_dir():
        if not (folder / "model_index.json").is_file():
            _fail("finetune", "pretrained", pretrained, "a diffusers pipeline folder (it has no model_index.json)")
    elif not _HUB_ID.match(pretrained):
        _fail(
            "finetune",
            "pretrained",
            pretrained,
            "an existing local folder or a hub id like 'owner/name' (no such folder)",
        )


@dataclass(frozen=True)
class GenerateConfig:
    sampler: Sampler
    timestep_spacing: TimestepSpacing
    inference_steps: int
    guidance_scale: float  # >= 1; 1 = off
    num_images: int
    first_seed: int
    batch_size: int
    noise_injection: bool
    noise_strength: float  # multiple of the measured std, >= 0
    class_guidance_scale: float = 1.0  # >= 1; 1 = off; > 1 needs finetune.label_dropout > 0

    def __post_init__(self) -> None:
        _check_choices("generate", self)
        _require_positive("generate", self, "inference_steps", "num_images", "batch_size")
        if self.first_seed < 0:
            _fail("generate", "first_seed", self.first_seed, "a seed >= 0")
        for key in ("guidance_scale", "class_guidance_scale"):
            if getattr(self, key) < 1:
                _fail("generate", key, getattr(self, key), "a scale >= 1 (1 = no guidance)")
        if self.noise_strength < 0:
            _fail("generate", "noise_strength", self.noise_strength, "a multiple >= 0 of the measured noise")


@dataclass(frozen=True)
class EvaluateConfig:
    encoder_seed: int  # one of sweep.seeds
    real_split: Literal["val"]  # test is refused: the scans' figures choose generators, and no choice looks at test
    min_images: int  # images per set
    inception_weights: Path | None
    kid_subset_size: int
    nearest_k: int
    floor_splits: int
    memorization_quantile: float  # fraction in (0, 1)
    pixel_size: int  # px, square
    detector_epochs: int
    detector_image_size: int  # px, square
    bootstrap: int
    seed: int
    batch_size: int
    workers: int  # 0 = in-process

    def __post_init__(self) -> None:
        _check_choices("evaluate", self)
        _require_positive(
            "evaluate",
            self,
            "min_images",
            "kid_subset_size",
            "nearest_k",
            "detector_epochs",
            "detector_image_size",
            "pixel_size",
            "batch_size",
            "floor_splits",
            "bootstrap",
        )
        if not 0 < self.memorization_quantile < 1:
            _fail("evaluate", "memorization_quantile", self.memorization_quantile, "a fraction in (0, 1)")
        for key in ("seed", "workers"):
            if getattr(self, key) < 0:
                _fail("evaluate", key, getattr(self, key), "an integer >= 0")


@dataclass(frozen=True)
class ClassifierConfig:
    arch: Arch
    image_size: int  # px, square
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    pretrained: str = ""  # "" = from scratch, else an existing file (not with simple_cnn)

    def __post_init__(self) -> None:
        _check_choices("classifier", self)
        _require_positive("classifier", self, "image_size", "batch_size", "epochs", "learning_rate")
        if self.weight_decay < 0:
            _fail("classifier", "weight_decay", self.weight_decay, "a number >= 0")
        if self.pretrained and self.arch == "simple_cnn":
            _fail("classifier", "pretrained", self.pretrained, "'' for simple_cnn (it has no pretrained weights)")
        if self.pretrained and not Path(self.pretrained).is_file():
            _fail("classifier", "pretrained", self.pretrained, "'' (from scratch) or an existing local weights file")
        if self.arch == "vit_b_16" and (
            self.image_size % 8 or (self.pretrained and (self.image_size < 128 or self.image_size % 16))
        ):
            _fail(
                "classifier", "image_size", self.image_size, "a multiple of 8 for vit_b_16 (pretrained: of 16, >= 128)"
            )


@dataclass(frozen=True)
class CurateConfig:
    real_quantile: float  # in [0, 1); 0 = keep every synthetic scan
    classifier_seed: int  # one of sweep.seeds, not evaluate.encoder_seed (checked when curation is on)

    def __post_init__(self) -> None:
        if not 0 <= self.real_quantile < 1:
            _fail("curate", "real_quantile", self.real_quantile, "a quantile in [0, 1) (0 = keep every scan)")


@dataclass(frozen=True)
class MixConfig:
    mode: MixMode

    def __post_init__(self) -> None:
        _check_choices("mix", self)


@dataclass(frozen=True)
class SweepConfig:
    ratios: tuple[int, ...]  # percents, distinct, in 1..100 (mix.mode add: 1..MAX_ADD_RATIO)
    seeds: tuple[int, ...]  # distinct, >= 0
    synthetic_class: ClassNames  # one or several distinct classes of prepare.classes
    keep: tuple[int, ...] = (100,)  # percents, distinct, in 1..100
    subset_seed: int = 0
    generator_seeds: tuple[int, ...] = (0,)  # distinct, >= 0: one generator per (keep, seed)

    def __post_init__(self) -> None:
        for ratio in self.ratios:
            if not isinstance(ratio, int) or not 0 < ratio <= MAX_ADD_RATIO:
                _fail(
                    "sweep",
                    "ratios",
                    list(self.ratios),
                    f"integer percents in 1..100 (mix.mode add: 1..{MAX_ADD_RATIO}; R=0 is the baseline stage)",
                )
        if len(set(self.ratios)) != len(self.ratios):
            _fail("sweep", "ratios", list(self.ratios), "distinct percents")
        if not self.keep or len(set(self.keep)) != len(self.keep) or not all(0 < k <= 100 for k in self.keep):
            _fail("sweep", "keep", list(self.keep), "one or more distinct integer percents in 1..100")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            _fail("sweep", "seeds", list(self.seeds), "two or more distinct seeds >= 0 (a bound needs their spread)")
        generators = self.generator_seeds
        if not generators or len(set(generators)) != len(generators) or min(generators) < 0:
            _fail("sweep", "generator_seeds", list(generators), "one or more distinct seeds >= 0")
        _check_choices("sweep", self)
        if not self.synthetic_classes or len(set(self.synthetic_classes)) != len(self.synthetic_classes):
            _fail("sweep", "synthetic_class", list(self.synthetic_classes), "one class or a list of distinct classes")
        if self.subset_seed < 0:
            _fail("sweep", "subset_seed", self.subset_seed, "a seed >= 0")

    @property
    def synthetic_classes(self) -> tuple[str, ...]:
        """synthetic_class as a tuple: every class whose examples synthetic scans stand in for, in order."""
        return _as_tuple(self.synthetic_class)

    @property
    def all_ratios(self) -> tuple[int, ...]:
        """R=0 (the baseline) followed by the swept ratios, ascending."""
        return (0, *sorted(self.ratios))


@dataclass(frozen=True)
class ReportConfig:
    metric: ReportMetric
    margin: float  # in (0, 1), in units of report.metric
    alpha: float  # one-sided level of the non-inferiority tests, in (0, 0.5), split over the regimes
    confidence: float  # in (0.5, 1), two-sided level of the intervals
    bootstrap: int
    seed: int
    preset: Preset = "recipe"  # smoke: quickstart.sh's; rehearsal: rehearse_sd15.sh's; on the answer's first line

    def __post_init__(self) -> None:
        _check_choices("report", self)
        if not 0 < self.margin < 1:
            _fail("report", "margin", self.margin, "a positive difference in (0, 1) of report.metric")
        if not 0 < self.alpha < 0.5:
            _fail("report", "alpha", self.alpha, "a one-sided level in (0, 0.5), e.g. 0.025 (ICH E9)")
        if not 0.5 < self.confidence < 1:
            _fail("report", "confidence", self.confidence, "a level in (0.5, 1)")
        _require_positive("report", self, "bootstrap")
        if self.seed < 0:
            _fail("report", "seed", self.seed, "a seed >= 0")


@dataclass(frozen=True)
class Params:
    paths: PathsConfig
    runtime: RuntimeConfig
    phantom: PhantomConfig
    prepare: PrepareConfig
    finetune: FinetuneConfig
    generate: GenerateConfig
    evaluate: EvaluateConfig
    classifier: ClassifierConfig
    sweep: SweepConfig
    report: ReportConfig
    mix: MixConfig = MixConfig(mode="replace")  # optional for older params files: the study's definition
    curate: CurateConfig = CurateConfig(real_quantile=0.0, classifier_seed=1)  # optional: off

    def __post_init__(self) -> None:
        if not set(self.sweep.synthetic_classes) <= set(self.prepare.classes):
            _fail(
                "sweep",
                "synthetic_class",
                _as_written(self.sweep.synthetic_class),
                f"classes of prepare.classes {list(self.prepare.classes)}",
            )
        if self.finetune.target_classes != self.sweep.synthetic_classes:
            _fail(
                "finetune",
                "target_class",
                _as_written(self.finetune.target_class),
                f"sweep.synthetic_class ({_as_written(self.sweep.synthetic_class)!r}), the same classes in the "
                "same order",
            )
        if self.mix.mode == "replace" and max(self.sweep.ratios, default=0) > 100:
            _fail(
                "sweep",
                "ratios",
                list(self.sweep.ratios),
                "percents in 1..100 with mix.mode replace (above 100 needs add)",
            )
        if self.generate.class_guidance_scale != 1 and not self.finetune.label_dropout:
            _fail(
                "generate",
                "class_guidance_scale",
                self.generate.class_guidance_scale,
                "1 unless finetune.label_dropout > 0 (guidance needs the null class that label dropout trains)",
            )
        if self.evaluate.encoder_seed not in self.sweep.seeds:
            _fail(
                "evaluate", "encoder_seed", self.evaluate.encoder_seed, f"one of sweep.seeds {list(self.sweep.seeds)}"
            )
        if self.curate.real_quantile and self.curate.classifier_seed not in self.sweep.seeds:
            _fail(
                "curate", "classifier_seed", self.curate.classifier_seed, f"one of sweep.seeds {list(self.sweep.seeds)}"
            )
        if self.curate.real_quantile and self.curate.classifier_seed == self.evaluate.encoder_seed:
            _fail(
                "curate",
                "classifier_seed",
                self.curate.classifier_seed,
                f"a seed other than evaluate.encoder_seed ({self.evaluate.encoder_seed}): the classifier that picks "
                "the scans must not be the encoder that scores them",
            )
        if self.mix.mode == "data":  # R = 100: each cohort's left-out scans all replaced by synthetic ones
            if self.sweep.ratios != (100,):
                _fail(
                    "sweep",
                    "ratios",
                    list(self.sweep.ratios),
                    "[100] with mix.mode data (a cohort's left-out CNV scans all filled with synthetic ones; "
                    "the regimes sweep.keep set the synthetic share)",
                )
            if 100 not in self.sweep.keep or len(self.sweep.keep) < 2:
                _fail(
                    "sweep",
                    "keep",
                    list(self.sweep.keep),
                    "100 (the all-real reference) and the cohorts to fill, e.g. [100, 75, 50, 25], with mix.mode data",
                )


# YAML types each scalar annotation accepts (bool is an int in Python, so it is refused explicitly)
_SCALARS = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _coerce(section: str, key: str, hint: Any, value: Any) -> Any:
    """Convert a YAML value to the annotated type, or raise ParamsError naming section.key (at once: a value
    of the wrong type has nothing further to check)."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        options = [option for option in options if option is not type(None)]
        # a list takes the tuple option (ClassNames: [DME, DRUSEN]), anything else the first other one
        listed = [option for option in options if get_origin(option) is tuple]
        others = [option for option in options if get_origin(option) is not tuple]
        hint = listed[0] if isinstance(value, (list, tuple)) and listed else (others or options)[0]
        origin = get_origin(hint)
    if origin is Literal:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(_message(section, key, value, "a list"))
        item = get_args(hint)[0]
        return tuple(_coerce(section, key, item, v) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(_message(section, key, value, "a mapping"))
        item = get_args(hint)[1]
        return {str(k): _coerce(section, f"{key}.{k}", item, v) for k, v in value.items()}
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ParamsError(_message(section, key, value, "a path"))
        return Path(value)
    if hint in _SCALARS:
        accepted, allowed = _SCALARS[hint]
        if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
            raise ParamsError(_message(section, key, value, allowed))
        return float(value) if hint is float else value
    return value


def _describe(hint: Any) -> str:
    """What a key of this annotation takes, for the error of a missing key."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "a section of keys"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if option is type(None) else _describe(option) for option in get_args(hint))
    if origin is Literal:
        return f"one of {sorted(get_args(hint))}"
    if hint is Path:
        return "a path"
    return {tuple: "a list", dict: "a mapping"}.get(origin) or _SCALARS.get(hint, (None, "a value"))[1]


def _unknown(key: str, known: Iterable[str], section: str | None) -> tuple[str, str | None]:
    """The error of an unknown key of `section` (None: an unknown section) and the known key it is closest
    to: 'unknown key, did you mean ...?', or the list of known keys when none is close."""
    kind = "section" if section is None else "key"
    guess = next(iter(difflib.get_close_matches(key, list(known), n=1)), None)
    if guess is None:
        return f"unknown {kind}, known {kind}s: {sorted(known)}", None
    return f"unknown {kind}, did you mean {guess if section is None else f'{section}.{guess}'!r}?", guess


def _build(cls: type, section: str | None, raw: Any) -> Any:
    """cls built from its mapping in params.yaml (section None: Params from the whole file), its checks
    reporting bad values; None when a key is missing or of the wrong type, which is reported. Unknown keys are
    reported and left out, so the section's other values are still checked."""
    name = (lambda key: str(key)) if section is None else (lambda key: f"{section}.{key}")
    if not isinstance(raw, Mapping):
        _report(
            f"params.yaml: {section}={raw!r}; expected a mapping of keys"
            if section
            else f"params.yaml: {raw!r}; expected a mapping of sections"
        )
        return None
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    missing = [
        key
        for key, field in fields.items()
        if key not in raw and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    complete = not missing
    for key in [key for key in raw if key not in fields]:
        problem, guess = _unknown(str(key), fields, section)
        _report(f"params.yaml: {name(key)}{'' if section is None else f'={raw[key]!r}'}; {problem}")
        missing = [other for other in missing if other != guess]  # a misspelt key is one error, not two
    for key in missing:
        _report(f"params.yaml: {name(key)} is missing; expected {_describe(hints[key])}")
    values = {}
    for key in [key for key in raw if key in fields]:
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, key, raw[key])
            complete = complete and values[key] is not None
            continue
        try:
            values[key] = _coerce(str(section), key, hint, raw[key])
        except ParamsError as error:
            _report(str(error))
            complete = False
    return cls(**values) if complete else None


# keys that params.yaml no longer takes, and where their setting lives now
MOVED = {("finetune", "seed"): "set sweep.generator_seeds, e.g. [0, 1, 2]: one generator per seed and regime"}


def params_from_dict(raw: Mapping[str, Any]) -> Params:
    """Build and validate Params from a parsed params.yaml: one ParamsError lists every unknown key, missing
    key, wrong type and bad value (cross-section rules once every section is whole), one per line."""
    with _collecting() as errors:
        for (section, key), instead in MOVED.items():
            if isinstance(raw.get(section), Mapping) and key in raw[section]:
                _report(f"params.yaml: {section}.{key}={raw[section][key]!r}; moved: {instead}")
        params = _build(Params, None, raw)
    if errors:
        raise ParamsError("\n".join(errors))
    return params


def _read(path: Path) -> str:
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the project root)")
    return path.read_text()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every error names the key, the value and what is allowed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(_read(path))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    return params_from_dict(raw or {})


def load_params_with(overrides: Sequence[str], path: str | Path = "params.yaml") -> Params:
    """params.yaml as `dvc exp run -S override ...` would leave it, without changing the file: for a script that
    must see an experiment's settings before DVC applies them (scripts/make_phantom.py in quickstart.sh)."""
    if not overrides:
        return load_params(path)
    if check_params(path, overrides) != 1:
        raise ParamsError(f"params.yaml: -S {' -S '.join(overrides)}: a sweep of several sets; expected one")
    from dvc.utils.hydra import apply_overrides  # DVC's own code, as in check_params

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "params.yaml"
        copy.write_text(_read(Path(path)))
        apply_overrides(copy, list(overrides))
        return load_params(copy)


def stage_arguments(doc: str | None, *, ratio: bool = False, generator: bool = True) -> argparse.Namespace:
    """A stage's command line as dvc.yaml's matrices spell it: --keep (the cohort), --generator (one of
    sweep.generator_seeds) unless the stage reads no synthetic scans, --ratio for the classifiers."""
    parser = argparse.ArgumentParser(description=doc)
    if ratio:
        parser.add_argument(
            "--ratio", type=int, required=True, help="percent of synthetic CNV per batch, 1..100 (add: ..1000)"
        )
    parser.add_argument(
        "--keep", type=int, required=True, help="cohort: percent of the real CNV training patients, 1..100"
    )
    if generator:
        parser.add_argument(
            "--generator", type=int, required=True, help="the generator's seed, one of sweep.generator_seeds"
        )
    return parser.parse_args()


def check_generator(params: Params, generator: int) -> None:
    """Refuse a generator seed params.yaml does not list (dvc.yaml's matrix only ever passes listed ones)."""
    if generator not in params.sweep.generator_seeds:
        raise ParamsError(
            f"--generator {generator}; expected one of sweep.generator_seeds {list(params.sweep.generator_seeds)}"
        )


def _unknown_override(key: str) -> str | None:
    """Why the dotted key of an override names no key of Params, or None. Keys below a section's key
    (phantom.patients.train) are left to the check of the result."""
    section, _, rest = key.partition(".")
    sections = typing.get_type_hints(Params)
    if section not in sections:
        return _unknown(section, sections, None)[0]
    field, known = rest.partition(".")[0], [field.name for field in dataclasses.fields(sections[section])]
    return _unknown(field, known, section)[0] if rest and field not in known else None


def check_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> int:
    """Validate a params file as `dvc exp run -S override ...` would leave it, and return how many parameter
    sets that is; raise one ParamsError listing every error.

    DVC's own code applies the overrides, to a temporary copy: Hydra's grammar, as `dvc exp run -S` takes it
    (`finetune.steps=300`, `'sweep.ratios=[25,50]'`, `+key=value` adds a key, `~key` drops one), and a
    sweep (`finetune.steps=300,600`, `'range(...)'`) checks every parameter set `dvc exp run --queue` queues.
    """
    path = Path(path)
    if not overrides:
        load_params(path)
        return 1
    text = _read(path)
    # DVC and Hydra take a second to import: only here, where -S needs them
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps, to_hydra_overrides
    from hydra.errors import OverrideParseException

    errors, usable = [], []
    for target, items in to_path_overrides(overrides).items():
        for override in items:
            if Path(target).name != "params.yaml":
                errors.append(f"params.yaml: -S {target}:{override}: an override of another file; this checks {path}")
                continue
            try:
                parsed = to_hydra_overrides([override])[0]
            except OverrideParseException as error:  # not an override dvc exp run -S takes
                problem = " ".join(str(error).split())
            else:  # ~key may drop a misspelt key; any other must name one that Params has
                problem = None if parsed.is_delete() else _unknown_override(parsed.key_or_group)
            if problem:
                errors.append(f"params.yaml: -S {override}: {problem}")
            else:
                usable.append(override)
    try:
        sets = [one["params.yaml"] for one in get_hydra_sweeps({"params.yaml": usable})]
    except InvalidArgumentError as error:  # a glob sweep, which dvc exp run refuses too
        raise ParamsError("\n".join([*errors, f"params.yaml: -S: {error}"])) from None
    found = []  # the errors of each parameter set
    for one in sets:
        lines = []
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "params.yaml"
            copy.write_text(text)
            for override in one:
                try:
                    apply_overrides(copy, [override])
                except InvalidArgumentError as error:  # e.g. a key params.yaml lacks, without '+'
                    lines.append(f"params.yaml: -S {override}: {' '.join(str(error.__cause__ or error).split())}")
            try:
                load_params(copy)
            except ParamsError as error:
                lines.extend(str(error).splitlines())
        found.append(lines)
    everywhere = set.intersection(*(set(lines) for lines in found))
    for one, lines in zip(sets, found):  # an error of some parameter sets of a sweep names them
        errors.extend(line if line in everywhere else f"{line} (with -S {' -S '.join(one)})" for line in lines)
    if errors:
        raise ParamsError("\n".join(dict.fromkeys(errors)))
    return len(sets)


def exit_on_params_error(main: Callable[[], Any]) -> Any:
    """main()'s result; a ParamsError prints as `error: <line>` on stderr, one line per error and no traceback,
    and exits with status 2 (as argparse does for bad arguments)."""
    try:
        return main()
    except ParamsError as error:
        print("\n".join(f"error: {line}" for line in str(error).splitlines()), file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m synthratio.config [-S key=value ...] [params.yaml]`: check params before queueing experiments."""
    parser = argparse.ArgumentParser(
        prog="python -m synthratio.config",
        description=(
            "Check a params file, with `dvc exp run -S` overrides applied, before queueing experiments: prints "
            "'<file>: OK', or every error and exits with status 2."
        ),
    )
    parser.add_argument("path", nargs="?", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override as `dvc exp run -S` takes it, e.g. 'sweep.ratios=[25,50]' or finetune.steps=300,600 "
        "(a sweep)",
    )
    args = parser.parse_args(argv)
    sets = check_params(args.path, args.overrides)
    print(f"{args.path}: OK" + (f" ({sets} parameter sets of the -S sweep)" if sets > 1 else ""))


if __name__ == "__main__":
    exit_on_params_error(main)
