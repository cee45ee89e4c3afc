"""Where the scans come from: each source of `paths.raw` surveyed into one table before any pixel is decoded.

A source is a folder, read in one of these layouts:
- Kermany's `{train,val,test}/{CLASS}/*`, Mendeley v3's `{train,test}/{CLASS}/*`, or class folders alone,
  `{CLASS}/*` (one pool, only `prepare.split: patient`); the patient comes from each file's name through
  `prepare.file_pattern` (Kermany's `CNV-<patient>-<n>.jpeg` by default), or from a DICOM file's PatientID;
- a folder holding `manifest.csv`, one row per scan: `path` (relative to the folder), `label`, `patient_id`
  and optionally `split`, as MONAI's data lists and Hugging Face's imagefolder metadata have them.
Either may hold LINKED_PATIENT_IDS.csv (as the shared Kermany samples do): groups of ids that are one patient.
The source is the whole folder, so DVC tracks every scan a manifest names. DICOM files give one row per
frame: a multi-frame volume is several B-scans of one patient.

The survey of a source (paths.sources/<name>.csv) lists its scans with their class, patient, official split
and file sha256: the table changes whenever a scan does, so DVC reruns prepare exactly then. Every naming,
labelling and path error is found here, naming the file (and the manifest's line), before decoding starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from synthratio.config import CLASS_NAMES, PrepareConfig
from synthratio.data.dicom import DicomError, is_dicom, read_header
from synthratio.data.kermany import SPLITS
from synthratio.data.prepared import DatasetError
from synthratio.runtime import progress_bar, write_atomically

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm", ".dicom")
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "patient_id")  # and optionally "split"
LINKS_FILE = "LINKED_PATIENT_IDS.csv"  # a header line, then one group of ids per line joined by "|": one patient
SURVEY_COLUMNS = ["file", "frame", "class", "patient_id", "linked_ids", "official_split", "sha256", "problem"]
LAYOUTS = f"Kermany's {{train,val,test}}/{{CLASS}}/*.jpeg, a flat {{CLASS}}/*.jpeg or a {MANIFEST_FILE}"


def survey_source(root: Path, config: PrepareConfig) -> pd.DataFrame:
    """The scans of source folder `root` of the classes in play (SURVEY_COLUMNS; `problem` says why a row is
    skipped under prepare.on_bad_file: skip, and is empty otherwise)."""
    if root.suffix.lower() == ".csv":
        raise DatasetError(
            f"{root}: a manifest is given by the folder that holds it, named {MANIFEST_FILE} (DVC then tracks the "
            "scans it lists, not only the list)"
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: input folder not found; expected {LAYOUTS}")
    manifest = root / MANIFEST_FILE
    rows = _manifest_rows(manifest, config) if manifest.is_file() else _folder_rows(root, config)
    rows = [expanded for row in rows for expanded in _frames(root, row, config)]
    table = pd.DataFrame(rows, columns=SURVEY_COLUMNS)
    links = _read_links(root / LINKS_FILE)
    table["linked_ids"] = [links.get(pid, "") for pid in table["patient_id"]]
    usable = table["problem"] == ""
    table.loc[usable, "sha256"] = [
        hashlib.sha256((root / file).read_bytes()).hexdigest()
        for file in progress_bar(table.loc[usable, "file"], desc=f"survey {root.name}", unit="file")
    ]
    return table


def _row(file: str, cls: str, patient: str, split: str, problem: str = "") -> dict:
    return {"file": file, "frame": 0, "class": cls, "patient_id": patient, "linked_ids": "", "official_split": split,
            "sha256": "", "problem": problem}  # fmt: skip


def _read_links(path: Path) -> dict[str, str]:
    """Patient id -> its group of ids ("a|b") from a source's LINKS_FILE: ids a data set's curators found to
    be one patient (Kermany's pixel-identical scans under two ids) where this copy may hold no shared image."""
    if not path.is_file():
        return {}
    groups = pd.read_csv(path, dtype=str, keep_default_na=False).iloc[:, 0]
    return {pid.strip(): group.strip() for group in groups if "|" in group for pid in group.split("|")}


def bad_file(where: str, problem: str, config: PrepareConfig) -> str:
    """The problem, raised under prepare.on_bad_file: error, logged and returned under skip."""
    if config.on_bad_file == "error":
        raise DatasetError(f"{where}: {problem} (set prepare.on_bad_file: skip to count and skip such files)")
    log.warning("skipping %s: %s", where, problem)
    return problem


def _class_roots(root: Path, config: PrepareConfig) -> list[tuple[str, Path]]:
    """(official split, folder holding the class folders) for each split of the layout at `root`."""
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits and any((root / cls).is_dir() for cls in config.classes):
        if config.split != "patient":
            raise DatasetError(
                f"{root}: class folders without train/ and test/; prepare.split={config.split!r} keeps the official "
                "split, so it needs them (prepare.split: patient re-splits a flat folder by patient)"
            )
        return [("", root)]
    if "train" not in splits or "test" not in splits:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"{root}: found folders {found}; expected train/ and test/ (and optionally val/), "
            f"or class folders {list(config.classes)}: {LAYOUTS}"
        )
    return [(s, root / s) for s in splits]


def _folder_rows(root: Path, config: PrepareConfig) -> list[dict]:
    pattern = re.compile(config.file_pattern)
    rows = []
    roots = _class_roots(root, config)
    for official_split, split_root in roots:
        for cls in config.classes:
            folder = split_root / cls
            if not folder.is_dir():
                # a class no split of this source holds is another source's to bring (prepare checks that one
                # does); Mendeley v3 has no val split
                if official_split != "val" and any((other / cls).is_dir() for _, other in roots):
                    raise DatasetError(f"{folder}: class folder missing; other splits of {root} have {cls!r}")
                continue
            for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
                patient, problem = _patient_from_name(path, cls, pattern, config)
                file = str(path.relative_to(root))
                rows.append(_row(file, cls, patient, official_split, problem and bad_file(str(path), problem, config)))
    return rows


def _patient_from_name(path: Path, cls: str, pattern: re.Pattern, config: PrepareConfig) -> tuple[str, str]:
    """(patient id, "") from the file name, or ("", the problem); a DICOM file the pattern does not fit is
    given its PatientID when the survey reads its header."""
    if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES and not is_dicom(path):
        return "", f"not an image file (suffix {path.suffix!r}; expected one of {list(IMAGE_SUFFIXES)})"
    match = pattern.fullmatch(path.stem)
    if not match:
        if is_dicom(path):
            return "", ""
        return "", f"file name has no patient id; expected a name prepare.file_pattern {config.file_pattern!r} fits"
    if "label" in pattern.groupindex and match["label"] != cls:
        return "", f"file name says class {match['label']!r} but it lies in folder {cls!r}"
    return match["patient"], ""


def _manifest_rows(manifest: Path, config: PrepareConfig) -> list[dict]:
    """The manifest's rows of the classes in play; a label outside CLASS_NAMES, a missing path or patient,
    a path outside the folder and (official split) a patient in two splits are errors naming the line."""
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [column for column in MANIFEST_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetError(
            f"{manifest}: columns {list(table.columns)} lack {missing}; expected {list(MANIFEST_COLUMNS)} and "
            "optionally 'split'"
        )
    root, has_split = manifest.parent.resolve(), "split" in table.columns
    rows = []
    for number, line in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"{manifest} line {number}"
        label, patient, split = line["label"].strip(), line["patient_id"].strip(), line.get("split", "").strip()
        if label in CLASS_NAMES and label not in config.classes:
            continue  # a class not in play, as a class folder prepare.classes does not name
        problem = _manifest_problem(root, line["path"].strip(), label, patient, split, has_split)
        row = _row(line["path"].strip(), label, patient, split, problem and bad_file(where, problem, config))
        rows.append({**row, "line": number})  # for the error below; the survey's table keeps SURVEY_COLUMNS
    if has_split and config.split == "official":
        _refuse_patients_in_two_splits(manifest, rows)
    elif not has_split and config.split == "official":
        raise DatasetError(
            f"{manifest}: no 'split' column; prepare.split='official' keeps the given split (prepare.split: patient "
            "splits by patient)"
        )
    return rows


def _manifest_problem(root: Path, path: str, label: str, patient: str, split: str, has_split: bool) -> str:
    if label not in CLASS_NAMES:
        return f"label {label!r}; expected one of {list(CLASS_NAMES)}"
    if not path:
        return "empty path"
    if not (root / path).resolve().is_relative_to(root):
        return f"path {path!r} lies outside {root}; the manifest's folder must hold its scans (DVC tracks that folder)"
    if not (root / path).is_file():
        return f"path {path!r} not found in {root}"
    if not patient:
        return "no patient_id (scans of one patient must be split together)"
    if has_split and split not in SPLITS:
        return f"split {split!r}; expected one of {list(SPLITS)}"
    return ""


def _refuse_patients_in_two_splits(manifest: Path, rows: list[dict]) -> None:
    table = pd.DataFrame(rows)
    usable = table[table["problem"] == ""]
    splits = usable.groupby("patient_id")["official_split"].nunique()
    if (splits > 1).any():
        patient = splits[splits > 1].index[0]
        lines = usable.loc[usable["patient_id"] == patient, ["line", "official_split"]].to_numpy().tolist()
        raise DatasetError(
            f"{manifest}: patient {patient!r} is in several splits (line, split: {lines}); prepare.split='official' "
            "keeps the given split, which must hold each patient in one"
        )


def _frames(root: Path, row: dict, config: PrepareConfig) -> list[dict]:
    """A DICOM row as one row per frame, its patient from PatientID where the name gave none; others as is."""
    path = root / row["file"]
    if row["problem"] or not is_dicom(path):
        return [row]
    try:
        header = read_header(path)
    except DicomError as error:
        return [{**row, "problem": bad_file(str(path), str(error).removeprefix(f"{path}: "), config)}]
    patient = row["patient_id"] or header.patient_id
    if not patient:
        return [{**row, "problem": bad_file(str(path), "no patient id in its name or its PatientID", config)}]
    return [{**row, "frame": frame, "patient_id": patient} for frame in range(header.frames)]


def write_survey(table: pd.DataFrame, path: Path) -> None:
    write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


def read_surveys(folder: Path, sources: Mapping[str, Path]) -> pd.DataFrame:
    """The surveys that the survey stage wrote for `sources` (name -> folder), as combine_surveys joins them."""
    tables = {}
    for name in sources:
        path = folder / f"{name}.csv"
        if not path.is_file():
            raise DatasetError(f"{path}: no survey of source {name!r} (run `dvc repro survey`)")
        tables[name] = pd.read_csv(path, dtype=str, keep_default_na=False)
    return combine_surveys(tables)


def combine_surveys(surveys: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The surveys of several sources (name -> survey_source's table) as one table with a `source` column;
    a patient id names one patient across sources."""
    table = pd.concat([survey.assign(source=name) for name, survey in surveys.items()], ignore_index=True)
    return table.astype({"frame": int, "patient_id": str})


def usable_scans(surveys: pd.DataFrame, roots: Mapping[str, Path], classes: Sequence[str]) -> pd.DataFrame:
    """The surveyed scans without a problem, once every class has some in some source (`roots`: name -> folder);
    patient ids numbers where all are (Kermany's), strings otherwise."""
    scans = surveys[surveys["problem"] == ""].reset_index(drop=True)
    for cls in classes:
        if not (scans["class"] == cls).any():
            where = ", ".join(str(root) for root in roots.values())
            raise DatasetError(f"{where}: no scans of class {cls!r} in any split; prepare.classes asks for it")
    if scans["patient_id"].str.fullmatch(r"\d+").all():
        scans["patient_id"] = scans["patient_id"].astype(int)
    return scans


def patient_links(scans: pd.DataFrame) -> list[list]:
    """The groups of ids that the sources' LINKS_FILEs make one patient, typed as usable_scans' patient_id."""
    kind = int if scans["patient_id"].dtype.kind == "i" else str
    groups = {group for group in scans["linked_ids"] if group}
    return [[kind(pid) for pid in group.split("|") if pid.isdigit() or kind is str] for group in sorted(groups)]
