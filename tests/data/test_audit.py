import json
import logging

import pandas as pd
import pytest

from synthratio.data.audit import SHORTCUT_WARN, shortcut_audit

CLASSES = ["CNV", "NORMAL"]


def scans(*groups: tuple[str, str, int, str, int]) -> pd.DataFrame:
    """A frame of (split, class, width, source, count) groups, one row per scan, patient_group a running id."""
    rows = [(split, cls, width, source) for split, cls, width, source, n in groups for _ in range(n)]
    frame = pd.DataFrame(rows, columns=["split", "class", "width", "source"])
    return frame.assign(patient_group=[f"p{i}" for i in range(len(frame))])


def both_splits(*groups: tuple[str, int, str, int]) -> pd.DataFrame:
    """The same (class, width, source, count) groups in train and test."""
    return scans(*[(split, *group) for split in ("train", "test") for group in groups])


INDEPENDENT = both_splits(
    ("CNV", 512, "a", 20), ("CNV", 1024, "a", 20), ("NORMAL", 512, "a", 10), ("NORMAL", 1024, "a", 10)
)
DETERMINED = both_splits(("CNV", 1024, "a", 15), ("NORMAL", 512, "a", 25))
# the 2x2 table [[30, 10], [10, 30]]: chi2 = 20 on 80 scans, V = sqrt(20 / 80) = 0.5; the lookup scores CNV
# 31/42 at 1024 px, 11/42 at 512 px: of the 40 x 40 CNV/NORMAL pairs 900 are ranked right, 600 tied, 100
# wrong, AUROC (900 + 600 / 2) / 1600 = 0.75
HAND = both_splits(("CNV", 1024, "a", 30), ("CNV", 512, "a", 10), ("NORMAL", 1024, "a", 10), ("NORMAL", 512, "a", 30))
THREE = both_splits(("CNV", 1024, "a", 10), ("DRUSEN", 768, "a", 5), ("NORMAL", 512, "a", 8))


@pytest.mark.parametrize(
    ("frame", "classes", "v", "auroc", "warned"),
    [
        (INDEPENDENT, CLASSES, 0.0, 0.5, False),
        (DETERMINED, CLASSES, 1.0, 1.0, True),
        (HAND, CLASSES, 0.5, 0.75, True),
        (THREE, ["CNV", "DRUSEN", "NORMAL"], 1.0, 1.0, True),
    ],
    ids=["independent", "determined", "by-hand", "three-classes"],
)
def test_width_association_and_shortcut_auroc(frame, classes, v, auroc, warned, caplog):
    with caplog.at_level(logging.WARNING, logger="synthratio.data.audit"):
        result = shortcut_audit(frame, classes)
    headline = result["headline"]
    assert list(headline) == ["train", "test", "warnings"]  # val absent entirely
    for split in ("train", "test"):  # test has train's scans: the carried-over AUROC equals the in-sample one
        assert headline[split] == {"width_cramers_v": pytest.approx(v), "shortcut_auroc": pytest.approx(auroc)}
    auroc_warnings = [w for w in headline["warnings"] if "alone tells the class" in w]
    assert bool(auroc_warnings) == warned == (auroc >= SHORTCUT_WARN)
    if warned:
        assert auroc_warnings == [
            f"train: width alone tells the class with AUROC {auroc:.2f}; a classifier can learn acquisition, "
            "not anatomy"
        ]
        assert auroc_warnings[0] in caplog.text
    assert headline["warnings"] == auroc_warnings  # same widths and mix in train and test: nothing else
    assert result["detail"]["cues"] == ["width"]
    json.dumps(result)  # plain Python values, for a metrics file


def test_a_width_train_lacks_is_named_with_its_split():
    frame = scans(
        ("train", "CNV", 512, "a", 20),
        ("train", "NORMAL", 512, "a", 20),
        ("test", "CNV", 512, "a", 20),
        ("test", "CNV", 768, "a", 12),
        ("test", "NORMAL", 512, "a", 20),
    )
    warnings = shortcut_audit(frame, CLASSES)["headline"]["warnings"]
    assert "test has 768-px scans (12 of 52) that train has none of: a classifier never saw that geometry" in warnings
    assert any(w.startswith("CNV: width mix differs between train and test (TV 0.38)") for w in warnings)
    assert not any(w.startswith("NORMAL:") for w in warnings)


@pytest.mark.parametrize(
    ("groups", "v"),
    [
        ([("CNV", 512, 30), ("NORMAL", 512, 10)], 0.0),  # one width
        ([("CNV", 512, 30), ("CNV", 1024, 10)], 0.0),  # one class
    ],
    ids=["one-width", "one-class"],
)
def test_a_one_row_or_one_column_table_has_no_association(groups, v):
    frame = scans(*[("train", c, w, "a", n) for c, w, n in groups])
    headline = shortcut_audit(frame, CLASSES)["headline"]
    assert headline["train"]["width_cramers_v"] == v
    assert (headline["train"]["shortcut_auroc"] is None) == (len({c for c, _, _ in groups}) == 1)


def test_a_split_of_one_class_has_no_auroc_and_no_error():
    frame = scans(("train", "CNV", 1024, "a", 10), ("train", "NORMAL", 512, "a", 10), ("val", "NORMAL", 512, "a", 5))
    headline = shortcut_audit(frame, CLASSES)["headline"]
    assert headline["val"]["shortcut_auroc"] is None
    assert headline["train"]["shortcut_auroc"] == 1.0


def test_several_sources_add_source_association_and_class_shares():
    frame = scans(
        ("train", "CNV", 512, "a", 30),
        ("train", "NORMAL", 512, "a", 10),
        ("train", "CNV", 512, "b", 10),
        ("train", "NORMAL", 512, "b", 30),
        ("test", "CNV", 512, "c", 5),
        ("test", "NORMAL", 512, "c", 5),
    )
    result = shortcut_audit(frame, CLASSES)
    train = result["headline"]["train"]
    assert train == {"width_cramers_v": 0.0, "shortcut_auroc": 0.75, "source_cramers_v": 0.5}  # the HAND table
    assert result["headline"]["test"]["shortcut_auroc"] == 0.5  # unseen source: train's class shares for all
    assert result["detail"]["cues"] == ["width", "source"]
    detail = result["detail"]["train"]
    assert detail["scans_by_source"] == {"a": {"CNV": 30, "NORMAL": 10}, "b": {"CNV": 10, "NORMAL": 30}}
    assert detail["class_share_by_source"] == {"a": {"CNV": 0.75, "NORMAL": 0.25}, "b": {"CNV": 0.25, "NORMAL": 0.75}}
    assert detail["scans_by_width"] == {"CNV": {"512": 40}, "NORMAL": {"512": 40}}
    warnings = result["headline"]["warnings"]
    assert warnings[0].startswith("train: width and source alone tell the class with AUROC 0.75")
    assert "test has scans from source 'c' (10 of 10) that train has none of" in warnings[1]


def test_a_single_source_has_no_source_association():
    result = shortcut_audit(HAND, CLASSES)
    assert all("source_cramers_v" not in result["headline"][s] for s in ("train", "test"))
    assert result["detail"]["test"]["scans_by_source"] == {"a": {"CNV": 40, "NORMAL": 40}}
    assert result["detail"]["test"]["scans_by_width"] == {
        "CNV": {"512": 10, "1024": 30},
        "NORMAL": {"512": 30, "1024": 10},
    }


def test_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match="DME"):
        shortcut_audit(scans(("train", "DME", 512, "a", 3)), CLASSES)
