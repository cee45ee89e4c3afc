import numpy as np
import pytest
import torch

from synthratio.classify.curation import curate

CPU = torch.device("cpu")


class Brightness(torch.nn.Module):
    """A stand-in classifier: the brighter a scan, the surer of class 0 (logits +-(mean - 0.5) of [0, 1] input)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # predict_proba finds the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([logit, -logit], dim=1)


def scans(*levels: int) -> np.ndarray:
    return np.stack([np.full((8, 8), level, np.uint8) for level in levels])


def test_scans_below_the_real_quantile_are_rejected():
    real = scans(*range(150, 250, 10))  # ten real scans of class 0, from 150 to 240
    synthetic = scans(100, 245, 160, 149, 200)
    curation = curate(Brightness(), synthetic, [7, 8, 9, 10, 11], real, label=0, quantile=0.1, device=CPU)
    # the 0.1 quantile of the real scans lies between levels 150 and 160: 100 and 149 fall below it
    assert curation.kept == (8, 9, 11)
    assert curation.rejected == 2
    real_p = torch.sigmoid(2 * (torch.tensor([150.0, 160.0]) / 255 - 0.5)).numpy()  # p(class 0): softmax of +-logit
    assert real_p[0] < curation.threshold < real_p[1]
    assert curation.to_dict() == {
        "curation_kept": 3,
        "curation_rejected": 2,
        "curation_threshold": round(curation.threshold, 6),
    }


def test_the_other_class_is_judged_by_its_own_probability():
    real = scans(10, 20, 30)  # dark real scans: class 1
    curation = curate(Brightness(), scans(5, 200), [0, 1], real, label=1, quantile=0.5, device=CPU)
    assert curation.kept == (0,) and curation.rejected == 1


def test_nothing_kept_is_an_error_that_names_the_setting():
    with pytest.raises(ValueError, match=r"rejected all 2 synthetic scans.*curate.real_quantile"):
        curate(Brightness(), scans(0, 10), [0, 1], scans(200, 210), label=0, quantile=0.05, device=CPU)


def test_one_scan_per_seed_and_some_real_scans_are_required():
    with pytest.raises(ValueError, match="2 synthetic scans for 3 seeds"):
        curate(Brightness(), scans(0, 10), [0, 1, 2], scans(200), label=0, quantile=0.05, device=CPU)
    with pytest.raises(ValueError, match="no real validation scans"):
        curate(Brightness(), scans(0), [0], np.zeros((0, 8, 8), np.uint8), label=0, quantile=0.05, device=CPU)
