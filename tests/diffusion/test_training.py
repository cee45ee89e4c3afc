import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import two_cpu_processes
from safetensors.torch import load_file

from synthratio.diffusion import checkpoints as checkpoint_io
from synthratio.diffusion import training
from synthratio.diffusion.pixel import build_unet
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import DiffusionTask, resolve_mixed_precision, train_diffusion

CPU = torch.device("cpu")


@pytest.fixture
def config(tiny_finetune):
    """Every training feature on, so a resume has every piece of state to restore."""
    return dataclasses.replace(
        tiny_finetune,
        steps=6,
        checkpoint_every=2,
        prediction_type="v_prediction",
        zero_terminal_snr=True,
        snr_gamma=5.0,
        noise_offset=0.1,
        timestep_sampling="logit_normal",
        lr_schedule="cosine",
        warmup_steps=2,
        ema_decay=0.9,
    )


class Scans:
    """8 random 16 px images; make_batch adds a draw from the loop's generator, like the backends' flips."""

    def __init__(self, fail_at_call: int | None = None, nan_at_call: int | None = None):
        self.data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.calls, self.fail_at_call, self.nan_at_call = 0, fail_at_call, nan_at_call

    def __call__(self, indices: torch.Tensor, generator: torch.Generator, share: slice):
        call, self.calls = self.calls, self.calls + 1
        if call == self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        x0 = (self.data[indices] * (0.9 + 0.2 * torch.rand(len(indices), 1, 1, 1, generator=generator)))[share]
        return (torch.full_like(x0, float("nan")) if call == self.nan_at_call else x0), {}


def task_for(config, scans: Scans | None = None, **kwargs) -> DiffusionTask:
    return DiffusionTask(
        unet=build_unet(config),
        scheduler=build_training_scheduler(config),
        items=8,
        make_batch=scans or Scans(),
        **kwargs,
    )


def weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in unet.state_dict().items()}


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_trains_and_returns_an_eval_unet(config):
    task = task_for(config)
    before = weights(task.unet)
    result = train_diffusion(task, config, CPU)
    assert len(result.losses) == config.steps
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.resumed_from_step == 0 and result.images_per_second > 0 and result.seconds > 0
    assert not result.unet.training
    assert any(not torch.equal(before[key], value) for key, value in weights(result.unet).items())


def test_cpu_run_repeats_exactly(config):
    first = train_diffusion(task_for(config), config, CPU)
    second = train_diffusion(task_for(config), config, CPU)
    assert first.losses == second.losses
    assert_same_weights(first.unet, second.unet)


def test_resume_after_a_kill_matches_an_uninterrupted_run(config, tmp_path):
    uninterrupted = train_diffusion(task_for(config), config, CPU)
    checkpoints = tmp_path / "model.checkpoints"
    with pytest.raises(KeyboardInterrupt):  # dies in step 3, after the checkpoint of step 2
        train_diffusion(task_for(config, Scans(fail_at_call=3)), config, CPU, checkpoint_dir=checkpoints)
    assert json.loads((checkpoints / "progress.json").read_text())["step"] == 2
    resumed = train_diffusion(task_for(config), config, CPU, checkpoint_dir=checkpoints)
    assert resumed.resumed_from_step == 2
    assert resumed.losses == uninterrupted.losses
    assert_same_weights(resumed.unet, uninterrupted.unet)


def test_checkpoint_keeps_only_the_latest_state_without_pickles(config, tmp_path):
    checkpoints = tmp_path / "ck"
    result = train_diffusion(task_for(config), config, CPU, checkpoint_dir=checkpoints)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary siblings left behind
    assert sorted(p.name for p in checkpoints.iterdir()) == ["optimizer.pt", "progress.json", "tensors.safetensors"]
    progress = json.loads((checkpoints / "progress.json").read_text())
    assert progress["step"] == 4 and progress["losses"] == result.losses[:4]
    tensors = load_file(checkpoints / "tensors.safetensors")
    assert tensors["generator.data"].dtype == torch.uint8
    assert any(key.startswith("ema.") for key in tensors)
    state = torch.load(checkpoints / "optimizer.pt", weights_only=True)
    assert state["lr_scheduler"]["last_epoch"] == 4


def test_checkpoint_of_other_settings_is_ignored(config, tmp_path, caplog):
    checkpoints = tmp_path / "ck"
    train_diffusion(task_for(config), config, CPU, checkpoint_dir=checkpoints)
    other = dataclasses.replace(config, learning_rate=config.learning_rate / 2)
    with caplog.at_level(logging.INFO, logger=checkpoint_io.__name__):
        result = train_diffusion(task_for(other), other, CPU, checkpoint_dir=checkpoints)
    assert result.resumed_from_step == 0
    assert "other finetune settings" in caplog.text
    again = train_diffusion(task_for(config, fingerprint="other data"), config, CPU, checkpoint_dir=checkpoints)
    assert again.resumed_from_step == 0


def test_only_trainable_parameters_change(config):
    task = task_for(config)
    trained_names = {name for name, _ in task.unet.named_parameters() if name.startswith("conv_out")}
    task.trainable = lambda: [p for name, p in task.unet.named_parameters() if name in trained_names]
    before = weights(task.unet)
    after = weights(train_diffusion(task, config, CPU).unet)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == trained_names


def test_ema_weights_replace_the_raw_ones_without_changing_training(config):
    raw = train_diffusion(task_for(config), dataclasses.replace(config, ema_decay=0.0), CPU)
    ema = train_diffusion(task_for(config), config, CPU)
    assert ema.losses == raw.losses
    assert not all(torch.equal(a, b) for a, b in zip(ema.unet.parameters(), raw.unet.parameters()))


def test_gradient_checkpointing_gives_the_same_training(config):
    plain = train_diffusion(task_for(config), config, CPU)
    task = task_for(config)
    checkpointed = train_diffusion(task, dataclasses.replace(config, gradient_checkpointing=True), CPU)
    assert task.unet.is_gradient_checkpointing
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)


class FakeLive:
    def __init__(self):
        self.logged, self.steps = [], 0

    def log_metric(self, name, value):
        self.logged.append((self.steps, name, value))

    def next_step(self):
        self.steps += 1


def test_logs_loss_and_warmed_up_lr_per_step(config):
    live = FakeLive()
    result = train_diffusion(task_for(config), config, CPU, live=live)
    assert [value for _, name, value in live.logged if name == "loss"] == result.losses
    lrs = [value for _, name, value in live.logged if name == "lr"]
    assert lrs[:3] == pytest.approx([0.0, config.learning_rate / 2, config.learning_rate])  # linear warm-up of 2 steps
    assert lrs[3] > lrs[4] > lrs[5] > 0  # then cosine decay
    assert live.steps == config.steps


def test_constant_lr_schedule_warms_up_too(config):
    """finetune.lr_schedule 'constant' runs as diffusers' constant_with_warmup (its 'constant' has no warm-up)."""
    live = FakeLive()
    train_diffusion(task_for(config), dataclasses.replace(config, lr_schedule="constant"), CPU, live=live)
    lrs = [value for _, name, value in live.logged if name == "lr"]
    assert lrs == pytest.approx([0.0, config.learning_rate / 2] + [config.learning_rate] * 4)


def test_non_finite_loss_names_step_and_causes(config):
    with pytest.raises(FloatingPointError, match=r"step 1\b.*learning_rate=0\.001.*mixed_precision='no'"):
        train_diffusion(task_for(config, Scans(nan_at_call=1)), config, CPU)


def test_batch_must_split_evenly_over_processes(config, monkeypatch):
    three = types.SimpleNamespace(num_processes=3, process_index=0)
    monkeypatch.setattr(training, "_accelerator", lambda device, precision: three)
    with pytest.raises(ValueError, match=r"finetune.batch_size=4 is not divisible by the 3"):
        train_diffusion(task_for(config), config, CPU)


@pytest.mark.parametrize(("setting", "expected"), [("auto", "no"), ("no", "no"), ("bf16", "bf16")])
def test_mixed_precision_on_cpu(config, setting, expected):
    assert resolve_mixed_precision(dataclasses.replace(config, mixed_precision=setting), CPU) == expected


def test_fp16_needs_cuda(config):
    with pytest.raises(ValueError, match="finetune.mixed_precision='fp16' needs a CUDA device"):
        resolve_mixed_precision(dataclasses.replace(config, mixed_precision="fp16"), CPU)


def test_bf16_trains_on_cpu_and_returns_fp32_weights(config):
    result = train_diffusion(task_for(config), dataclasses.replace(config, mixed_precision="bf16", steps=3), CPU)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert all(p.dtype == torch.float32 for p in result.unet.parameters())


KILLABLE_RUN = """
import dataclasses, json, logging, sys, time
from pathlib import Path
import torch
from accelerate import PartialState
from synthratio.config import load_params
from synthratio.diffusion.pixel import build_unet
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import DiffusionTask, train_diffusion

logging.basicConfig(level=logging.INFO)
checkpoints, out, pause = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "pause"
config = dataclasses.replace(load_params(sys.argv[4]).finetune, image_size=16, block_channels=(8, 16),
                             train_timesteps=100, steps=4, batch_size=4, checkpoint_every=2, mixed_precision="no",
                             ema_decay=0.9)
data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
calls = []

def make_batch(indices, generator, share):
    calls.append(1)
    if pause and len(calls) == 4:  # step 3, after the checkpoint of step 2: wait for the kill
        (out.parent / "ready").touch()
        time.sleep(600)
    return (data[indices] * torch.rand(len(indices), 1, 1, 1, generator=generator))[share], {}

task = DiffusionTask(build_unet(config), build_training_scheduler(config), 8, make_batch)
result = train_diffusion(task, config, torch.device("cpu"), checkpoint_dir=checkpoints)
weights = {key: value.flatten().tolist() for key, value in result.unet.state_dict().items()}
with torch.no_grad():
    probe = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    prediction = result.unet(probe, torch.tensor([10, 50])).sample.flatten().tolist()
if PartialState().is_main_process:
    out.write_text(json.dumps({"losses": result.losses, "resumed": result.resumed_from_step, "weights": weights,
                               "prediction": prediction}))
"""


@pytest.mark.slow
def test_sigkilled_process_resumes_to_the_same_result(tmp_path):
    """A real SIGKILL after a checkpoint: the rerun resumes and ends where an unkilled process ends."""
    script = tmp_path / "run.py"
    script.write_text(KILLABLE_RUN)
    params = str(Path(__file__).resolve().parents[2] / "params.yaml")

    def run(name: str, mode: str) -> subprocess.Popen:
        args = [sys.executable, str(script), str(tmp_path / f"{name}.ck"), str(tmp_path / f"{name}.json"), mode, params]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    killed = run("killed", "pause")
    deadline = time.monotonic() + 300
    while not (tmp_path / "ready").exists():
        why = killed.stderr.read() if killed.poll() is not None else "timeout"
        assert killed.poll() is None and time.monotonic() < deadline, why
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    for name, mode in (("killed", "go"), ("whole", "go")):
        process = run(name, mode)
        assert process.wait(timeout=300) == 0, process.stderr.read()
    resumed, whole = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("killed", "whole"))
    assert resumed["resumed"] == 2 and whole["resumed"] == 0
    assert resumed["losses"] == whole["losses"]
    assert resumed["weights"] == whole["weights"]


@pytest.mark.slow
def test_two_processes_train_the_model_of_one(tmp_path):
    """DDP over two CPU processes (gloo, accelerate's multi-process launcher) trains the model of one process:
    the same losses and predictions up to the rounding of averaging two half-batch gradients. (Not the same
    weights: a bias that a GroupNorm cancels has a zero gradient, and Adam turns its rounding noise into
    full-size steps that change no output.)"""
    script = tmp_path / "run.py"
    script.write_text(KILLABLE_RUN)
    params = str(Path(__file__).resolve().parents[2] / "params.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(script), str(tmp_path / "one.ck"), str(tmp_path / "one.json"), "go", params]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    launch = two_cpu_processes(script, str(tmp_path / "two.ck"), str(tmp_path / "two.json"), "go", params)
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert "2 process(es)" in done.stderr
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["prediction"], one["prediction"], rtol=1e-4, atol=1e-5)
