import copy
import re
from pathlib import Path

import pytest
import yaml

from synthratio.config import ParamsError, load_params, params_from_dict

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
        ("sweep", "seeds", [], "one or more distinct seeds"),
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
        ("finetune", "backend", "gan", "one of"),
        ("finetune", "lr_schedule", "step", "one of"),
        ("finetune", "mixed_precision", "fp8", "one of"),
        ("finetune", "steps", -10, "a positive number"),
        ("finetune", "max_images", -1, "a count >= 0"),
        ("finetune", "checkpoint_every", -1, "a count >= 0"),
        ("finetune", "image_size", 30, "a multiple of 4"),
        ("finetune", "learning_rate", "fast", "a number"),
        ("evaluate", "encoder_seed", 7, "one of sweep.seeds"),
        ("report", "margin", 0, r"a positive difference in \(0, 1\)"),
        ("report", "metric", "f1", r"one of \['accuracy', 'auroc', 'log_loss'\]"),
        ("runtime", "device", "tpu", "one of"),
        ("evaluate", "pixel_size", 0, "a positive number"),
        ("runtime", "launcher", "mpirun -n 2", r"'python', 'accelerate launch \[options\]' or 'torchrun \[options\]'"),
        ("runtime", "launcher", "", "'python'"),
        ("runtime", "launcher", "accelerate config", "'accelerate launch"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw_params, section, key, value, message):
    raw = copy.deepcopy(raw_params)
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message) as error:
        params_from_dict(raw)
    assert f"{section}." in str(error.value)


def test_unknown_key_lists_known_keys(raw_params):
    raw_params["classifier"]["epoch"] = 3
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['epoch'\].*known keys: .*'epochs'"):
        params_from_dict(raw_params)


def test_missing_key_and_missing_file(raw_params, tmp_path):
    del raw_params["generate"]["sampler"]
    with pytest.raises(ParamsError, match=r"lacks key\(s\) \['sampler'\]"):
        params_from_dict(raw_params)
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


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
