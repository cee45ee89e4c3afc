from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthratio.evaluation import features
from synthratio.evaluation.features import (
    classifier_feature_fn,
    file_features,
    inception_available,
    read_scans,
    write_png_folder,
)

CPU = torch.device("cpu")


class PoolEncoder(nn.Module):
    """Stand-in classifier: a 2x2 average-pooled image as its embedding; records what it is fed."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.seen: list[torch.Tensor] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_classifier_feature_fn_feeds_the_model_one_channel_in_unit_range():
    model = PoolEncoder().train()
    fn = classifier_feature_fn(model, image_size=16, device=CPU)
    images = torch.randint(0, 256, (3, 1, 16, 16)).float().expand(3, 3, 16, 16)

    out = fn(images)

    assert not model.training
    assert out.shape == (3, 4) and not out.requires_grad
    torch.testing.assert_close(model.seen[-1], images[:, :1] / 255)


def test_classifier_feature_fn_resizes_to_the_classifier_size():
    model = PoolEncoder()
    fn = classifier_feature_fn(model, image_size=8, device=CPU)

    fn(torch.full((2, 3, 24, 20), 255.0))

    assert model.seen[-1].shape == (2, 1, 8, 8)
    torch.testing.assert_close(model.seen[-1], torch.ones(2, 1, 8, 8))


@pytest.mark.parametrize("workers", [0, 1])  # 1: decoded in a DataLoader worker process
def test_file_features_passes_images_unresized(tmp_path: Path, workers: int):
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 20), dtype=np.uint8)
    files = write_png_folder(images, tmp_path / "scans")
    seen: list[torch.Size] = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.shape)
        return batch.mean(dim=(1, 2, 3))[:, None]

    feats = file_features(files, fn, CPU, batch_size=4, workers=workers)

    assert seen == [(4, 3, 12, 20), (1, 3, 12, 20)]
    assert feats.shape == (5, 1)
    np.testing.assert_allclose(feats[:, 0], images.mean(axis=(1, 2)), rtol=1e-5)


def test_file_features_rejects_mixed_sizes_naming_the_set_and_a_file(tmp_path: Path):
    files = write_png_folder(np.zeros((2, 16, 16), np.uint8), tmp_path / "a")
    files += write_png_folder(np.zeros((1, 16, 24), np.uint8), tmp_path / "wide")

    with pytest.raises(
        ValueError, match=r"(?s)real scans mixes image sizes.*16x16 px: 2 images, 24x16 px: 1 images.*e.g. .*wide"
    ):
        file_features(files, lambda x: x.mean(dim=(2, 3)), CPU, name="real scans")


def test_file_features_keep_the_listed_order_and_read_scans_round_trips(tmp_path: Path):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    files = write_png_folder(images, tmp_path)
    order = [files[2], files[0], files[3], files[1]]

    feats = file_features(order, lambda x: x.mean(dim=(1, 2, 3))[:, None], CPU)

    np.testing.assert_allclose(feats[:, 0], images[[2, 0, 3, 1]].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(read_scans(order, "scans"), images[[2, 0, 3, 1]])


def test_read_scans_names_missing_files(tmp_path: Path):
    files = write_png_folder(np.zeros((2, 8, 8), np.uint8), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"scans: 1 of 3 listed images missing, e.g. .*000002.png"):
        read_scans([*files, tmp_path / "000002.png"], "scans")


def test_write_png_folder_refuses_stale_files(tmp_path: Path):
    write_png_folder(np.zeros((2, 8, 8), np.uint8), tmp_path)
    with pytest.raises(ValueError, match="not empty"):
        write_png_folder(np.zeros((2, 8, 8), np.uint8), tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        write_png_folder(np.zeros((2, 8, 8), np.float32), tmp_path / "new")


@pytest.mark.parametrize("weights", [None, Path("no/such/inception-2015-12-05.pt")])
def test_inception_unavailable_without_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: Path | None):
    target = tmp_path / "tmp" / "inception-2015-12-05.pt"
    monkeypatch.setattr(features, "CLEANFID_INCEPTION", target)

    assert not inception_available(weights)
    assert not target.parent.exists()


def test_inception_available_links_weights_where_cleanfid_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "tmp" / "inception-2015-12-05.pt"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    monkeypatch.setattr(features, "CLEANFID_INCEPTION", target)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"torchscript")

    assert inception_available(weights)
    assert target.read_bytes() == b"torchscript"
    assert inception_available(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
