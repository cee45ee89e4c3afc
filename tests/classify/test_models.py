import pytest
import torch

from synthratio import config
from synthratio.classify.models import ARCHS, build_classifier


def test_archs_are_the_configs():
    assert ARCHS == config.ARCHS


@pytest.mark.parametrize(("arch", "dim"), [("simple_cnn", 128), ("resnet18", 512)])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_output_and_feature_shapes(arch: str, dim: int, num_classes: int):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, num_classes)
        assert model.features(x).shape == (3, dim)


def test_simple_cnn_is_small():
    params = sum(p.numel() for p in build_classifier("simple_cnn", 2).parameters())
    assert 100_000 <= params <= 300_000


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match=r"classifier.arch='vgg'; expected one of \['resnet18', 'simple_cnn'\]"):
        build_classifier("vgg", 2)
