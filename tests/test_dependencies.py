"""dvc.yaml against the code it runs: a change to any synthratio module a stage imports reruns that stage.

Hand-kept dependency lists drift; this test reads each stage's script, follows its imports through the package
(imports inside functions count: they run too) and asks DVC's own view of dvc.yaml whether every module
reached is a dependency, itself or through a folder above it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from synthratio import layout
from synthratio.config import load_params

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Modules a stage imports that deliberately are not among its deps, each with the reason it changes no result.
NOT_DEPENDENCIES: dict[str, str] = {}


def module_file(name: str) -> Path | None:
    """The source file of a dotted synthratio module name (a package is its __init__.py), None if no such module."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the synthratio modules a file imports anywhere in its body (inside functions too, not under
    `if TYPE_CHECKING:`), parent packages included."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    annotations_only = {  # `if TYPE_CHECKING:` blocks never run: their imports are for type checkers
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in annotations_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}; the package imports absolutely"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "synthratio":
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in found if module_file(name) is not None}


def import_closure(script: Path) -> set[Path]:
    """Every synthratio source file that running `script` can import."""
    seen: set[Path] = set()
    todo = [module_file(name) for name in imported_modules(script)]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(module_file(name) for name in imported_modules(path))
    return seen


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


def stage_scripts() -> list[tuple[str, Path, list[Path]]]:
    """(name, script, deps) of every dvc.yaml stage, as DVC resolves them (matrix items expanded)."""
    stages = []
    for stage in Repo(str(ROOT)).index.stages:
        if not stage.cmd:
            continue  # data.dvc and other tracked data
        script = next(word for word in stage.cmd.split() if word.startswith("stages/"))
        stages.append((stage.addressing, ROOT / script, [ROOT / dep.def_path for dep in stage.deps]))
    return stages


STAGES = stage_scripts()


def test_every_stage_runs_a_script_it_depends_on():
    assert len(STAGES) >= 7
    for name, script, deps in STAGES:
        assert script.is_file() and script in deps, f"{name}: runs {script} without depending on it"


@pytest.mark.parametrize(("name", "script", "deps"), STAGES, ids=[name for name, _, _ in STAGES])
def test_every_module_a_stage_imports_is_a_dependency(name: str, script: Path, deps: list[Path]):
    missing = sorted(
        str(path.relative_to(ROOT))
        for path in import_closure(script)
        if not covered(path, deps)
        and str(path.relative_to(ROOT)) not in NOT_DEPENDENCIES
        and not (path.name == "__init__.py" and not path.read_text().strip())  # an empty package marker
    )
    assert not missing, f"dvc.yaml stage {name} imports these without depending on them: {missing}"


@pytest.mark.parametrize(("name", "script", "deps"), STAGES, ids=[name for name, _, _ in STAGES])
def test_every_source_a_stage_depends_on_is_one_it_imports(name: str, script: Path, deps: list[Path]):
    """The other direction: a listed module the stage no longer reaches only reruns it for nothing."""
    closure = import_closure(script)
    stale = [
        str(dep.relative_to(ROOT))
        for dep in deps
        if SRC in dep.parents and not any(path == dep or dep in path.parents for path in closure)
    ]
    assert not stale, f"dvc.yaml stage {name} depends on sources it never imports: {stale}"


def test_the_closure_follows_imports_inside_functions_and_from_package_imports(tmp_path: Path):
    """The walk this test relies on: `from synthratio.diffusion import latent` inside a function reaches latent.py
    and what latent.py imports; a plain library import, or one under `if TYPE_CHECKING:`, reaches nothing."""
    script = tmp_path / "stage.py"
    script.write_text(
        "from typing import TYPE_CHECKING\nimport numpy\n\n"
        "if TYPE_CHECKING:\n    from synthratio.classify import train\n\n"
        "def main():\n    from synthratio.diffusion import latent\n"
    )
    closure = {str(path.relative_to(SRC)) for path in import_closure(script)}
    assert {"synthratio/diffusion/latent.py", "synthratio/diffusion/training.py", "synthratio/config.py"} <= closure
    assert not any("classify" in path for path in closure)


def closure_of_script(script: Path) -> set[str]:
    """Dotted names of the synthratio modules that running or importing `script` can import."""
    return {
        ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for path in import_closure(script)
    }


def closure_of(module: str) -> set[str]:
    return closure_of_script(module_file(module)) | {module}


@pytest.mark.parametrize(
    ("module", "must_not_reach"),
    [
        ("synthratio.diffusion.sampling", {"synthratio.diffusion.training", "synthratio.diffusion.pixel"}),
        ("synthratio.diffusion.latent", {"synthratio.diffusion.pixel"}),
        ("synthratio.figures", {"synthratio.report"}),
        ("synthratio.layout", {"synthratio.runtime", "synthratio.classify.experiment"}),
        ("synthratio.config", {"synthratio.runtime", "synthratio.layout"}),
    ],
)
def test_dependencies_point_one_way(module: str, must_not_reach: set[str]):
    """Sampling needs no training loop, the latent backend not the pixel one, figures not the report, and the
    light modules (config, layout) nothing heavier than themselves."""
    assert not closure_of(module) & must_not_reach


def test_generate_does_not_depend_on_the_report():
    """A change to the markdown report must not re-sample every scan."""
    assert "synthratio.report" not in closure_of_script(ROOT / "stages/generate.py")


def test_the_report_stage_runs_without_torch():
    """The report stage imports every module it can reach and torch is still not loaded: it reads JSON and CSV."""
    modules = sorted(closure_of_script(ROOT / "stages/report.py"))
    code = f"import sys; import {', '.join(modules)}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"importing {modules} loads torch: {result.stderr[-2000:]}"


def test_the_run_folders_dvc_yaml_declares_are_the_ones_layout_names():
    """dvc.yaml spells every run's folders from params.yaml by hand, the stages write where layout says: a name
    changed on one side only would leave DVC tracking outputs no stage writes."""
    params = load_params(ROOT / "params.yaml")
    outs = {stage.addressing: {out.def_path for out in stage.outs} for stage in Repo(str(ROOT)).index.stages}
    expected: dict[str, set[Path]] = {}
    for keep in params.sweep.keep:
        for generator in params.sweep.generator_seeds:
            files = layout.generator_files(params, keep, generator)
            expected[f"finetune@{keep}-{generator}"] = {files.model, files.live}
            expected[f"generate@{keep}-{generator}"] = {files.synthetic}
        runs = [(0, None)] + [(r, g) for r in params.sweep.ratios for g in params.sweep.generator_seeds]
        for ratio, generator in runs:
            stage = layout.stage_name(ratio, keep, generator)
            expected[stage] = {layout.classifier_metrics_path(params, ratio, keep, generator)}
            for seed in params.sweep.seeds:
                run = {"ratio": ratio, "seed": seed, "keep": keep, "generator": generator}
                expected[stage] |= {
                    layout.classifier_path(params, **run).parent,
                    layout.predictions_path(params, **run).parent,
                    layout.classifier_live_path(params, **run).parent,
                }
    for stage, paths in expected.items():
        assert stage in outs, f"dvc.yaml has no stage {stage}"
        for path in sorted(paths):
            assert str(path) in outs[stage], f"dvc.yaml stage {stage} does not declare {path} among its outs"
