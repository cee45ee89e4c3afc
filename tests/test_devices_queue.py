"""One GPU per queued experiment, end to end on the CPU: `dvc queue start -j 2` with a stub list of two GPUs
(CUDA_VISIBLE_DEVICES=0,1, which no CUDA ever reads here), two experiments whose stage starts as every stage does
(runtime.setup) and holds its GPU until the other has started too, so both run at once."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_helpers import GIT_USER, run, start_queue, wait_for_queue

# The stage: setup() as the pipeline's stages call it, then wait (at most WAIT s) for the other experiment's stage
# to start, so the two hold their GPUs at the same time; it records what CUDA would see.
STAGE = """
import json, os, sys, time
from pathlib import Path
from synthratio.config import RuntimeConfig
from synthratio.runtime import setup

name, seen, locks = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
device = setup(RuntimeConfig(device="auto", gpu_locks=locks))
(seen / f"{name}.started").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
deadline = time.monotonic() + 120
while len(list(seen.glob("*.started"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
both = len(list(seen.glob("*.started"))) == 2
found = {"gpu": os.environ["CUDA_VISIBLE_DEVICES"], "device": str(device), "both": both}
(seen / f"{name}.json").write_text(json.dumps(found))
"""


def test_two_queue_workers_run_their_stages_on_different_gpus(tmp_path: Path):
    project, seen, locks = tmp_path / "project", tmp_path / "seen", tmp_path / "locks"
    project.mkdir()
    seen.mkdir()
    (project / "stage.py").write_text(STAGE)
    (project / "params.yaml").write_text("name: a\n")
    (project / "dvc.yaml").write_text(
        f"stages:\n  claim:\n    cmd: python stage.py ${{name}} {seen} {locks}\n    deps: [stage.py]\n"
        "    params: [name]\n"
    )
    run(["git", "init", "-q"], project)
    run(["dvc", "init", "-q"], project)
    run(["git", *GIT_USER, "add", "-A"], project)
    run(["git", *GIT_USER, "commit", "-qm", "init"], project)
    for name in ("a", "b"):
        run(["dvc", "exp", "run", "--queue", "-n", f"exp-{name}", "-S", f"name={name}"], project)
    start_queue(project, 2, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    status = wait_for_queue(project, ["exp-a", "exp-b"], timeout=300)
    assert status.count("Success") == 2, status
    runs = {name: json.loads((seen / f"{name}.json").read_text()) for name in ("a", "b")}
    assert all(found["both"] for found in runs.values()), runs  # they held their GPUs at the same time
    assert sorted(found["gpu"] for found in runs.values()) == ["0", "1"], runs
    assert {found["device"] for found in runs.values()} == {"cpu"}  # no CUDA here: the stub claims, torch says cpu
    assert sorted(path.name for path in locks.iterdir()) == ["gpu-0.lock", "gpu-1.lock"]
