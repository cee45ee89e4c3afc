import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import efficientnet_b0, resnet18

from synthratio import config
from synthratio.classify.models import build_classifier, load_weights, vit_patch_size
from synthratio.config import ARCHS

DIMS = {
    "simple_cnn": 128,
    "resnet18": 512,
    "resnet50": 2048,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
    "vit_b_16": 768,
}


def test_archs_are_the_configs():
    assert ARCHS == config.ARCHS == tuple(DIMS)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_trains_a_step_on_gray_scans(arch: str):
    """Forward and backward at 32 px, 4 classes: logits and features have their shapes, every weight gets a gradient."""
    torch.manual_seed(0)
    model = build_classifier(arch, 4, image_size=32)
    x = torch.rand(2, 1, 32, 32)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)
        assert model.features(x).shape == (2, DIMS[arch])


def test_simple_cnn_is_small():
    params = sum(p.numel() for p in build_classifier("simple_cnn", 2, 32).parameters())
    assert 100_000 <= params <= 300_000


@pytest.mark.parametrize(("size", "patch"), [(32, 4), (64, 8), (128, 16), (224, 16), (136, 17)])
def test_vit_patch_gives_a_token_grid(size: int, patch: int):
    assert vit_patch_size(size) == patch


@pytest.mark.parametrize(
    ("make", "arch", "stem", "suffix"),
    [(resnet18, "resnet18", "conv1", ".safetensors"), (efficientnet_b0, "efficientnet_b0", "features.0.0", ".pth")],
)
def test_pretrained_weights_load_from_a_local_file(tmp_path, make, arch: str, stem: str, suffix: str):
    """A torchvision checkpoint (3-channel stem, 1000-class head) saved here: the stem becomes the RGB sum, the
    rest is copied, the head is new; the ImageNet gray statistics normalise the input."""
    torch.manual_seed(1)
    reference = make(weights=None)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = build_classifier(arch, 2, image_size=32, pretrained=path)
    gray_stem = model.backbone.get_submodule(stem).weight
    torch.testing.assert_close(gray_stem, state[f"{stem}.weight"].sum(dim=1, keepdim=True))
    name, weight = next((k, v) for k, v in state.items() if "weight" in k and not k.startswith(stem) and v.ndim == 4)
    torch.testing.assert_close(model.backbone.state_dict()[name], weight)
    assert model.mean.item() == pytest.approx(0.449) and model.std.item() == pytest.approx(0.226)
    assert build_classifier(arch, 2, image_size=32).mean.item() == 0.5  # from scratch
    assert load_weights(path).keys() == state.keys()


def test_pretrained_weights_of_another_arch_are_refused(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18(weights=None).state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"does not fit torchvision efficientnet_b0: missing \['features"):
        build_classifier("efficientnet_b0", 2, 32, pretrained=path)


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("vgg", {}, r"classifier.arch='vgg'; expected one of \['convnext_tiny', 'efficientnet_b0', 'resnet18'"),
        ("simple_cnn", {"pretrained": "w.pt"}, r"simple_cnn has no pretrained weights"),
        ("resnet18", {"pretrained": "/nowhere/w.pt"}, r"classifier.pretrained='/nowhere/w.pt': no such weights file"),
        ("vit_b_16", {"image_size": 36}, r"classifier.image_size=36; vit_b_16 needs a multiple of 8"),
    ],
)
def test_bad_arguments_name_the_value(arch: str, kwargs: dict, message: str):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_classifier(arch, 2, **{"image_size": 32, **kwargs})


def test_config_refuses_a_missing_weights_file():
    base = dict(arch="resnet18", image_size=32, batch_size=8, epochs=1, learning_rate=1e-3, weight_decay=0.0)
    with pytest.raises(
        config.ParamsError, match=r"classifier.pretrained='/nowhere.pt'; expected '' \(from scratch\) or an existing"
    ):
        config.ClassifierConfig(**base, pretrained="/nowhere.pt")
    with pytest.raises(
        config.ParamsError, match=r"classifier.image_size=32; expected a multiple of 8 for vit_b_16 \(pretrained"
    ):
        config.ClassifierConfig(**{**base, "arch": "vit_b_16"}, pretrained=__file__)
