import copy
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import heavy_imports, run, run_recording_imports

from synthratio.config import ParamsError, check_params, load_params, load_params_with, params_from_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.sweep.all_ratios[0] == 0
    assert params.finetune.target_class == params.sweep.synthetic_class


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("sweep", "ratios", [50, 150], "percents in 1..100"),
        ("sweep", "ratios", [0, 50], "percents in 1..100"),
        ("sweep", "ratios", [-25], "percents in 1..100"),
        ("sweep", "ratios", [50, 50], "distinct percents"),
        ("sweep", "ratios", [50.0], "an integer"),
        ("sweep", "seeds", [], "two or more distinct seeds"),
        ("sweep", "seeds", [3], r"two or more distinct seeds >= 0 \(a bound needs their spread\)"),
        ("sweep", "generator_seeds", [0, 0], "one or more distinct seeds"),
        ("report", "alpha", 0.5, r"a one-sided level in \(0, 0.5\), e.g. 0.025"),
        ("evaluate", "real_split", "test", r"evaluate.real_split='test'; expected one of \['val'\]"),
        ("sweep", "keep", [0, 100], "percents in 1..100"),
        ("mix", "mode", "interleave", "one of"),
        ("generate", "sampler", "heun", "one of"),
        ("generate", "num_images", -4, "a positive number"),
        ("generate", "first_seed", -1, "a seed >= 0"),
        ("generate", "timestep_spacing", "random", "one of"),
        ("classifier", "arch", "vgg", "one of"),
        ("classifier", "epochs", 0, "a positive number"),
        ("classifier", "batch_size", -32, "a positive number"),
        ("prepare", "workers", -1, "a positive count"),
        ("prepare", "split", "random", "one of"),
        ("prepare", "test_fraction", 0.9, "< 1"),
        ("prepare", "classes", ["CNV", "GLAUCOMA"], "names from"),
        ("finetune", "beta_schedule", "cosine", "one of"),
        (
            "finetune",
            "beta_schedule",
            "pretrained",
            r"one of \[.*'squaredcos_cap_v2'\] for the pixel backend "
            r"\('pretrained', the pretrained scheduler's own, is for the latent",
        ),
        ("finetune", "prediction_type", "pretrained", r"one of \['epsilon', 'v_prediction'\] for the pixel backend"),
        (
            "finetune",
            "prediction_type",
            "x0",
            r"one of \['epsilon', 'v_prediction'\], or 'pretrained' \(latent backend",
        ),
        ("finetune", "backend", "gan", "one of"),
        ("finetune", "lr_schedule", "step", "one of"),
        ("finetune", "mixed_precision", "fp8", "one of"),
        ("finetune", "steps", -10, "a positive number"),
        ("finetune", "max_images", -1, "a count >= 0"),
        ("finetune", "checkpoint_every", -1, "a count >= 0"),
        ("finetune", "image_size", 30, "a multiple of 4"),
        ("finetune", "learning_rate", "fast", "a number"),
        ("finetune", "label_dropout", 0.1, "0 unless class_conditional is true with the pixel backend"),
        ("finetune", "label_dropout", 1.0, r"a fraction in \[0, 1\)"),
        ("generate", "class_guidance_scale", 0.5, "a scale >= 1"),
        ("generate", "class_guidance_scale", 2.0, "1 unless finetune.label_dropout > 0"),
        ("evaluate", "encoder_seed", 7, "one of sweep.seeds"),
        ("report", "margin", 0, r"a positive difference in \(0, 1\)"),
        ("report", "metric", "f1", r"one of \['accuracy', 'auroc', 'log_loss'\]"),
        ("runtime", "device", "tpu", "one of"),
        ("evaluate", "pixel_size", 0, "a positive number"),
        ("runtime", "launcher", "mpirun -n 2", r"'python', 'accelerate launch \[options\]' or 'torchrun \[options\]'"),
        ("runtime", "launcher", "", "'python'"),
        ("runtime", "launcher", "accelerate config", "'accelerate launch"),
        ("paths", "raw", "data/raw", "a mapping"),
        ("paths", "raw", {}, r"one or more sources, name: folder \(e.g. \{kermany: data/raw\}\)"),
        ("paths", "raw", {"my sample": "data/raw"}, r"paths.raw='my sample'; expected source names of letters"),
        ("prepare", "file_pattern", r"(?P<id>\d+)", r"a regex with a group \(\?P<patient>...\)"),
        ("prepare", "file_pattern", r"(?P<patient>\d+)-(?P<eye>[LR])", "no other named group"),
        ("prepare", "file_pattern", "(?P<patient>[", "a regular expression"),
        ("prepare", "geometry", "stretch", r"one of \['crop', 'pad', 'squeeze'\]"),
        ("prepare", "max_upscale", 0.9, r"a factor >= 1 \(1: never enlarge a scan\)"),
        ("report", "preset", "tiny", r"one of \['recipe', 'rehearsal', 'smoke'\]"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw_params, section, key, value, message):
    raw = copy.deepcopy(raw_params)
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message) as error:
        params_from_dict(raw)
    assert f"{section}." in str(error.value)


def test_unknown_key_names_the_closest_known_key_or_lists_them(raw_params):
    raw_params["finetune"]["step"] = raw_params["finetune"].pop("steps")  # a misspelt key: one error, not two
    steps = raw_params["finetune"]["step"]
    raw_params["classifier"]["zzz"] = 3
    raw_params["evalute"] = raw_params.pop("evaluate")
    with pytest.raises(ParamsError) as error:
        params_from_dict(raw_params)
    assert sorted(str(error.value).splitlines()) == [
        "params.yaml: classifier.zzz=3; unknown key, known keys: ['arch', 'batch_size', 'epochs', 'image_size', "
        "'learning_rate', 'pretrained', 'weight_decay']",
        "params.yaml: evalute; unknown section, did you mean 'evaluate'?",
        f"params.yaml: finetune.step={steps}; unknown key, did you mean 'finetune.steps'?",
    ]


def test_missing_key_and_missing_file(raw_params, tmp_path):
    del raw_params["generate"]["sampler"]
    with pytest.raises(
        ParamsError,
        match=r"^params.yaml: generate.sampler is missing; "
        r"expected one of \['ddim', 'ddpm', 'dpmsolver\+\+', 'euler', 'unipc'\]$",
    ):
        params_from_dict(raw_params)
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


def test_every_error_is_reported_at_once(raw_params):
    raw_params["generate"].update(sampler="heun", num_images=-4)  # two bad values in one section
    raw_params["finetune"]["learning_rate"] = "fast"  # a wrong type
    raw_params["classifier"]["epoch"] = 3  # an unknown key
    del raw_params["report"]["seed"]  # a missing key
    raw_params["prepare"]["test_fraction"] = 0.9  # a bad value of a section that is otherwise whole
    with pytest.raises(ParamsError) as error:
        params_from_dict(raw_params)
    lines = str(error.value).splitlines()
    expected = [
        "generate.sampler='heun'; expected one of",
        "generate.num_images=-4; expected a positive number",
        "finetune.learning_rate='fast'; expected a number",
        "classifier.epoch=3; unknown key, did you mean 'classifier.epochs'?",
        "report.seed is missing; expected an integer",
        "prepare.val_fraction + test_fraction=",
    ]
    assert len(lines) == len(expected), lines
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    assert all(line.startswith("params.yaml: ") for line in lines)


def test_cross_section_rules_are_reported_with_the_sections_own_errors(raw_params):
    raw_params["evaluate"]["encoder_seed"] = 7  # not one of sweep.seeds
    raw_params["sweep"]["ratios"] = [50, 50]
    with pytest.raises(ParamsError) as error:
        params_from_dict(raw_params)
    assert [line.split(";")[0] for line in str(error.value).splitlines()] == [
        "params.yaml: sweep.ratios=[50, 50]",
        "params.yaml: evaluate.encoder_seed=7",
    ]


def check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthratio.config", *args], cwd=cwd, capture_output=True, text=True)


def test_check_command_applies_dvc_overrides_and_reports_bad_ones(raw_params, tmp_path):
    raw_params["finetune"].update(steps=400, warmup_steps=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    done = check(
        "-S", "sweep.ratios=[25,50]", "-S", "finetune.steps=300", "-S", "finetune.learning_rate=1e-4", cwd=tmp_path
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "params.yaml: OK\n", "")
    done = check("-S", "finetune.step=300", "-S", "generate.num_images=-8", "-S", "finetune.steps=300,-1", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [
        "error: params.yaml: -S finetune.step=300: unknown key, did you mean 'finetune.steps'?",
        "error: params.yaml: generate.num_images=-8; expected a positive number",
        "error: params.yaml: finetune.steps=-1; expected a positive number "
        "(with -S generate.num_images=-8 -S finetune.steps=-1)",
        "error: params.yaml: finetune.warmup_steps=0; expected fewer than finetune.steps (-1) "
        "(with -S generate.num_images=-8 -S finetune.steps=-1)",
    ]
    raw_params["finetune"]["step"] = raw_params["finetune"].pop("steps")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    assert check(cwd=tmp_path).returncode == 2
    assert check("-S", "~finetune.step", "-S", "+finetune.steps=400", cwd=tmp_path).stdout == "params.yaml: OK\n"


def test_load_params_with_overrides_reads_them_as_dvc_exp_run_leaves_them_and_keeps_the_file(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    params = load_params_with(["phantom.patients.train=7", "report.preset=smoke"], params_file)
    assert params.phantom.patients["train"] == 7 and params.report.preset == "smoke"
    assert params_file.read_text() == (REPO / "params.yaml").read_text()
    assert load_params_with([], params_file) == load_params(params_file)
    with pytest.raises(ParamsError, match="a sweep of several sets"):
        load_params_with(["finetune.steps=300,600"], params_file)
    with pytest.raises(ParamsError, match="report.preset='fast'"):
        load_params_with(["report.preset=fast"], params_file)


def test_check_params_counts_the_parameter_sets_of_a_sweep():
    assert check_params(REPO / "params.yaml", ["finetune.steps=300,600", "generate.sampler=ddim,unipc"]) == 4


def test_finetune_seed_is_refused_with_where_it_moved(raw_params):
    """A params.yaml from before generator replicates: its one generator seed would be silently ignored."""
    raw_params["finetune"]["seed"] = 3
    with pytest.raises(ParamsError, match=r"finetune.seed=3; moved: set sweep.generator_seeds, e.g. \[0, 1, 2\]"):
        params_from_dict(raw_params)


def test_stage_refuses_a_generator_seed_params_yaml_does_not_list(raw_params, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    done = run([sys.executable, str(REPO / "stages" / "generate.py"), "--keep", "100", "--generator", "7"], tmp_path,
               check=False)  # fmt: skip
    assert done.returncode == 2
    listed = raw_params["sweep"]["generator_seeds"]  # the workspace's: the quick start's smoke run lists [0]
    assert done.stderr == f"error: --generator 7; expected one of sweep.generator_seeds {listed}\n"


def test_stage_with_a_typo_fails_at_once_in_one_line(raw_params, tmp_path, tmp_path_factory):
    raw_params["finetune"]["step"] = raw_params["finetune"].pop("steps")
    steps = raw_params["finetune"]["step"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    record = tmp_path_factory.mktemp("imports") / "modules.txt"
    done, imported = run_recording_imports(
        REPO / "stages" / "finetune.py", ["--keep", "100", "--generator", "0"], tmp_path, record
    )
    assert done.returncode == 2
    assert done.stderr == f"error: params.yaml: finetune.step={steps}; unknown key, did you mean 'finetune.steps'?\n"
    assert [path.name for path in tmp_path.iterdir()] == ["params.yaml"]
    assert heavy_imports(imported) == [], "the stage imported these before it read params.yaml"


@pytest.mark.parametrize(
    "pretrained, message",
    [
        ("", "a Stable Diffusion pipeline"),
        ("/no/such/sd-folder", "no such folder"),
        ("owner/name/extra", "no such folder"),
        ("/", "no model_index.json"),
    ],
)
def test_latent_backend_needs_an_existing_pipeline_or_a_hub_id(raw_params, pretrained, message):
    raw_params["finetune"].update(backend="latent", pretrained=pretrained)
    with pytest.raises(ParamsError, match=re.escape(f"finetune.pretrained={pretrained!r}") + f".*{message}"):
        params_from_dict(raw_params)


def test_latent_backend_accepts_a_hub_id_or_a_pipeline_folder(raw_params, tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    for pretrained in ("stable-diffusion-v1-5/stable-diffusion-v1-5", str(tmp_path)):
        raw_params["finetune"].update(backend="latent", pretrained=pretrained)
        assert params_from_dict(raw_params).finetune.pretrained == pretrained


def test_latent_backend_takes_the_pretrained_schedule_and_checks_other_values(raw_params, tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    raw_params["finetune"].update(
        backend="latent", pretrained=str(tmp_path), beta_schedule="pretrained", prediction_type="pretrained"
    )
    finetune = params_from_dict(raw_params).finetune
    assert (finetune.beta_schedule, finetune.prediction_type) == ("pretrained", "pretrained")
    raw_params["finetune"]["beta_schedule"] = "cosine"
    with pytest.raises(ParamsError, match=r"finetune.beta_schedule='cosine'; expected one of \[.*\], or 'pretrained'"):
        params_from_dict(raw_params)


def literal_fields() -> list[tuple[str, str, tuple]]:
    """(section, key, allowed values) of every enum-like setting, read from the config classes' annotations."""
    from synthratio import config

    fields = []
    for section, hint in typing.get_type_hints(config.Params).items():
        for key, choices in config._choices(hint).items():
            fields.append((section, key, choices))
    return fields


@pytest.mark.parametrize(("section", "key", "choices"), literal_fields(), ids=lambda x: str(x)[:20])
def test_every_enum_setting_is_checked_from_its_annotation(raw_params, section, key, choices):
    """One source per choice: the Literal annotation lists the values; a value outside it fails naming them."""
    assert choices and all(isinstance(choice, str) for choice in choices)
    value = raw_params[section][key]
    raw_params[section][key] = ["NOPE"] if isinstance(value, list) else "NOPE"
    with pytest.raises(
        ParamsError, match=rf"{section}\.{key}=.*NOPE.*; expected one of {re.escape(str(sorted(choices)))}"
    ):
        params_from_dict(raw_params)


def test_enum_tuples_are_the_annotations_values():
    from synthratio import config

    assert config.SAMPLERS == typing.get_args(config.Sampler) and "laplace" in config.BETA_SCHEDULES
    assert config.MIX_MODES == ("replace", "add", "data") and config._choices(config.MixConfig) == {
        "mode": config.MIX_MODES
    }


def test_several_synthetic_classes_are_a_list_served_by_one_class_conditional_generator(raw_params):
    """sweep.synthetic_class takes one class or a list; finetune.target_class lists the same classes, and more
    than one needs the class-conditional pixel model (one model samples each class)."""
    raw = copy.deepcopy(raw_params)
    raw["prepare"]["classes"] = ["CNV", "DME", "DRUSEN", "NORMAL"]
    raw["sweep"]["synthetic_class"] = raw["finetune"]["target_class"] = ["DME", "DRUSEN"]
    raw["finetune"]["class_conditional"] = True
    params = params_from_dict(raw)
    assert params.sweep.synthetic_classes == params.finetune.target_classes == ("DME", "DRUSEN")
    assert load_params(REPO / "params.yaml").sweep.synthetic_classes == ("CNV",)  # one class: a string, as before
    cases = [
        ({"finetune": {"class_conditional": False}}, r"finetune\.target_class=\['DME', 'DRUSEN'\]; expected one class"),
        ({"finetune": {"target_class": ["DRUSEN", "DME"]}}, "the same classes in the same order"),
        ({"sweep": {"synthetic_class": ["DME", "DME"]}, "finetune": {"target_class": ["DME", "DME"]}}, "distinct"),
        ({"prepare": {"classes": ["CNV", "DME", "NORMAL"]}}, r"sweep\.synthetic_class=\['DME', 'DRUSEN'\]; expected"),
        ({"sweep": {"synthetic_class": ["DME", "GA"]}}, r"sweep\.synthetic_class=\['DME', 'GA'\]; expected one of"),
    ]
    for changes, message in cases:
        bad = copy.deepcopy(raw)
        for section, values in changes.items():
            bad[section].update(values)
        with pytest.raises(ParamsError, match=message):
            params_from_dict(bad)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-S", "finetune.stepz=3"], "-S finetune.stepz=3: unknown key, did you mean 'finetune.steps'?"),
        (["-n", "zero", "--set-param", "sweep.ratios=[0,25]"], "sweep.ratios=[0, 25]; expected integer percents"),
        (["-Sfinetune.steps=100,0", "evaluate_synthetic"], "finetune.steps=0"),  # one set of a sweep
    ],
)
def test_queue_script_refuses_bad_params_before_dvc_sees_them(tmp_path: Path, arguments: list[str], message: str):
    """scripts/queue.sh, the README's way to queue: the checker's message and status 2, and dvc never called
    (a stand-in `dvc` on PATH records its calls); good params reach `dvc exp run --queue` unchanged."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "scripts/queue.sh", *arguments], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not calls.exists()
    good = ["-n", "steps300", "-S", "finetune.steps=300", "evaluate_synthetic"]
    done = subprocess.run(["bash", "scripts/queue.sh", *good], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text() == "exp run --queue " + " ".join(good) + "\n"
