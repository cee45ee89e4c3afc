import numpy as np
import pytest

from synthratio.evaluation.manifold import knn_radii, precision_recall_density_coverage


def test_hand_computed_example():
    # real 0, 1, 2, 3: every 1-NN radius is 1. fake 0.5 lies in the balls of real 0 and 1; fake 10 in none.
    # fake 1-NN radii are 9.5, so every real row lies in a fake ball. Real 0 and 1 have a fake within 1.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])

    result = precision_recall_density_coverage(real, fake, k=1)

    np.testing.assert_allclose(knn_radii(real, 1), [1, 1, 1, 1])
    assert result == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5}


def test_collapsed_fakes_keep_precision_but_lose_recall_and_coverage():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 4))
    honest = precision_recall_density_coverage(real, rng.normal(size=(200, 4)), k=5)
    collapsed = precision_recall_density_coverage(real, rng.normal(scale=0.1, size=(200, 4)), k=5)
    shifted = precision_recall_density_coverage(real, rng.normal(loc=3.0, size=(200, 4)), k=5)

    assert min(honest.values()) > 0.7
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.2 and collapsed["coverage"] < 0.2
    assert collapsed["density"] > honest["density"]  # crowded into the densest real region
    assert shifted["precision"] < 0.2 and shifted["coverage"] < 0.2


@pytest.mark.parametrize("k", [0, 4])
def test_k_out_of_range_named(k: int):
    with pytest.raises(ValueError, match=f"k={k} nearest neighbours with 10 real and 4 fake"):
        precision_recall_density_coverage(np.zeros((10, 2)), np.zeros((4, 2)), k=k)
