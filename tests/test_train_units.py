"""Unit tests of the training CLI's pieces that need no training: the run key, the checkpoint
store, the launcher line and its port, model loading arguments and the order of config and load."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from scdpo.train import cli, launch
from scdpo.train.checkpoint import (
    COMPLETE,
    STOP_SIGNALS,
    CheckpointPolicy,
    CheckpointStore,
    key_digest,
    run_key,
)
from scdpo.train.launch import free_port, launch_command

RECIPE = {"learning_rate": 1e-5, "epochs": 1, "seed": 0}


@pytest.fixture
def inputs(tmp_path) -> dict[str, str]:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    return {"model": str(tmp_path / "model"), "data": str(tmp_path / "data.jsonl")}


def test_run_key_changes_with_what_decides_the_result_only(inputs):
    base = key_digest(run_key("sft", RECIPE, inputs, 1))
    not_deciding = {**RECIPE, "checkpoint": {"every_steps": 7}, "launcher": "accelerate launch"}
    assert key_digest(run_key("sft", not_deciding, inputs, 1)) == base
    assert key_digest(run_key("sft", {**RECIPE, "learning_rate": 2e-5}, inputs, 1)) != base
    assert key_digest(run_key("dpo", RECIPE, inputs, 1)) != base
    assert key_digest(run_key("sft", RECIPE, inputs, 4)) != base  # another global batch
    Path(inputs["data"]).write_text('{"prompt": "a", "completion": "c"}\n')
    assert key_digest(run_key("sft", RECIPE, inputs, 1)) != base
    Path(inputs["data"]).write_text('{"prompt": "a", "completion": "b"}\n')
    (Path(inputs["model"]) / "config.json").write_text('{"x": 1}')
    assert key_digest(run_key("sft", RECIPE, inputs, 1)) != base


def test_store_ignores_incomplete_and_foreign_checkpoints_and_keeps_the_last_k(tmp_path):
    store = CheckpointStore(tmp_path / "ck", {"k": 1})
    foreign = tmp_path / "ck" / "0123456789abcdef" / "checkpoint-9"
    foreign.mkdir(parents=True)
    (foreign / COMPLETE).write_text("{}")
    for step in (2, 4, 6):
        (store.dir / f"checkpoint-{step}").mkdir(parents=True)
    store.mark_complete(2, keep=2)
    store.mark_complete(4, keep=2)
    # checkpoint-6 has no marker: a save cut by a kill.
    store.prepare(is_main=True)
    assert not foreign.parent.exists()
    assert not (store.dir / "checkpoint-6").exists()
    assert store.latest() == store.dir / "checkpoint-4"
    assert json.loads((store.dir / "key.json").read_text()) == {"k": 1}
    (store.dir / "checkpoint-8").mkdir()
    store.mark_complete(8, keep=2)
    assert [p.name for p in store._steps()] == ["checkpoint-4", "checkpoint-8"]
    store.remove_all()
    assert not (tmp_path / "ck").exists()


def test_policy_defaults_and_recipe_values():
    assert CheckpointPolicy.from_recipe({}) == CheckpointPolicy(500, 30.0, 2)
    assert CheckpointPolicy.from_recipe({"checkpoint": {"keep": 1}}).keep == 1


def test_launch_line_gets_a_free_port_and_this_interpreter():
    argv = ["sft", "--model", "m"]
    assert launch_command("python", "train.py", argv, 1234) is None
    command = launch_command("accelerate launch --config_file z.yaml", "train.py", argv, 1234)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert (
        command[3:] == ["--config_file", "z.yaml", "--main_process_port", "1234", "train.py"] + argv
    )
    mine = launch_command("accelerate launch --main_process_port 999", "t.py", [], 1234)
    assert mine.count("--main_process_port") == 1 and "999" in mine


# What SLURM sets in the task srun starts on the third node of a 4-node job.
NODE_TASK_ENV = {
    "SLURM_JOB_NUM_NODES": "4",
    "SLURM_NODEID": "2",
    "SLURM_JOB_ID": "123456",
    "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.1",
    "SLURM_GPUS_ON_NODE": "4",
}


def _exec_calls(monkeypatch, env: dict[str, str]) -> list[list[str]]:
    for name in ("LOCAL_RANK", "RANK", "SCDPO_TRAIN_LAUNCHED", "SCDPO_NODE_TASK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []

    def exec_instead(file, command):
        calls.append(command)
        raise SystemExit(0)  # execvp does not return

    monkeypatch.setattr(launch.os, "execvp", exec_instead)
    monkeypatch.setattr(launch.sys, "argv", ["train.py", "sft", "--model", "m"])
    return calls


def test_several_nodes_start_one_task_per_node_then_accelerate_per_node(monkeypatch):
    zero3 = "accelerate launch --config_file envs/accelerate/zero3.yaml"
    argv = ["sft", "--model", "m"]
    calls = _exec_calls(monkeypatch, {"SLURM_JOB_NUM_NODES": "4"})
    with pytest.raises(SystemExit):
        launch.relaunch(zero3, argv)  # the job's shell, on the first node
    (spread,) = calls
    assert spread[:4] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1"]
    assert spread[-4:] == ["train.py", *argv] and sys.executable in spread

    calls = _exec_calls(monkeypatch, NODE_TASK_ENV | {"SCDPO_NODE_TASK": "1"})
    with pytest.raises(SystemExit):
        launch.relaunch(zero3, argv)  # one of the tasks srun started
    (accelerate,) = calls
    assert accelerate[2] == "accelerate.commands.launch"
    assert "--config_file" in accelerate and accelerate[-4:] == ["train.py", *argv]
    flags = {k: accelerate[accelerate.index(k) + 1] for k in accelerate if k.startswith("--")}
    assert flags["--num_machines"] == "4" and flags["--num_processes"] == "16"
    assert flags["--machine_rank"] == "2" and flags["--main_process_ip"] == "10.0.0.1"
    assert accelerate.count("--main_process_port") == 1
    # Every node derives the same port from the job id.
    other = launch.machine_options(NODE_TASK_ENV | {"SLURM_NODEID": "0"}, 4)
    assert flags["--main_process_port"] == other[other.index("--main_process_port") + 1]


def test_several_nodes_refuse_a_plain_python_launcher(monkeypatch):
    _exec_calls(monkeypatch, {"SLURM_JOB_NUM_NODES": "2"})
    with pytest.raises(SystemExit, match="accelerate launch"):
        launch.relaunch("python", ["sft"])


def test_one_node_jobs_launch_as_before(monkeypatch):
    calls = _exec_calls(monkeypatch, {"SLURM_JOB_NUM_NODES": "1"})
    with pytest.raises(SystemExit):
        launch.relaunch("accelerate launch --multi_gpu --num_processes 2", ["sft"])
    (command,) = calls
    assert "--num_machines" not in command and "--main_process_port" in command


def test_free_port_is_free_and_differs_between_jobs():
    ports = {free_port() for _ in range(5)}
    assert len(ports) > 1 and 29500 not in ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nobody holds it


def test_model_kwargs_on_cpu(monkeypatch):
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: False)
    kwargs = cli.model_kwargs({"trust_remote_code": True})
    assert kwargs == {
        "dtype": cli.torch.float32,
        "attn_implementation": "sdpa",
        "trust_remote_code": True,
    }
    assert cli.model_kwargs({"dtype": "bfloat16"})["dtype"] == cli.torch.bfloat16
    assert cli.model_kwargs({})["trust_remote_code"] is False


def test_model_kwargs_on_gpu_pick_flash_attention_when_importable(monkeypatch):
    import transformers.utils

    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    assert cli.model_kwargs({}) == {
        "dtype": cli.torch.bfloat16,
        "attn_implementation": "flash_attention_2",
        "trust_remote_code": False,
    }
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    assert cli.model_kwargs({})["attn_implementation"] == "sdpa"


class _Stop(Exception):
    pass


def test_training_config_is_built_before_any_model_loads(tmp_path, inputs, monkeypatch):
    """DeepSpeed ZeRO-3 partitions at load time only if the config exists by then."""
    events = []
    build = cli.build_config

    def build_config(*args, **kwargs):
        events.append("config")
        return build(*args, **kwargs)

    def load_model(model_dir, recipe):
        events.append("model")
        raise _Stop

    monkeypatch.setattr(cli, "build_config", build_config)
    monkeypatch.setattr(cli, "load_model", load_model)
    monkeypatch.setattr(cli, "load_tokenizer", lambda *a: SimpleNamespace(eos_token="</s>"))
    recipe = {
        **RECIPE,
        "batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_length": 32,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
    }
    args = cli.parse_args(
        ["sft", "--model", inputs["model"], "--data", inputs["data"], "--out", str(tmp_path / "o")]
        + ["--checkpoint-dir", str(tmp_path / "ck"), "--recipe", json.dumps(recipe)]
    )
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        with pytest.raises(_Stop):
            cli.train("sft", args, recipe)
    finally:
        for sig, handler in handlers.items():  # train() installed its stop-signal handlers
            signal.signal(sig, handler)
    assert events == ["config", "model"]


def test_only_the_main_process_writes_tokenizer_and_log(tmp_path):
    saved = []
    trainer = SimpleNamespace(
        save_model=lambda out: saved.append(out),
        args=SimpleNamespace(should_save=False),
        state=SimpleNamespace(log_history=[]),
    )
    tokenizer = SimpleNamespace(save_pretrained=lambda out: saved.append("tokenizer"))
    cli._save_output(trainer, tokenizer, tmp_path, {})
    assert saved == [str(tmp_path)]  # save_model is collective; it writes on rank 0 itself
    assert not (tmp_path / "training_log.json").exists()
    trainer.args.should_save = True
    cli._save_output(trainer, tokenizer, tmp_path, {"examples": 3})
    assert "tokenizer" in saved
    assert json.loads((tmp_path / "training_log.json").read_text())["examples"] == 3


def _step_end(callback, step: int, max_steps: int = 100):
    state = SimpleNamespace(global_step=step, max_steps=max_steps, is_world_process_zero=True)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    callback.on_step_end(SimpleNamespace(device="cpu"), state, control)
    return control.should_save, control.should_training_stop


def test_saves_every_n_steps_every_m_minutes_and_on_a_signal(tmp_path, monkeypatch):
    from scdpo.train import checkpoint

    clock = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: clock[0])
    callback = checkpoint.ResumableCallback(
        CheckpointStore(tmp_path, {}), CheckpointPolicy(every_steps=5, every_minutes=10, keep=1)
    )
    callback.on_train_begin(None, None, None)
    assert _step_end(callback, 1) == (False, False)
    assert _step_end(callback, 5) == (True, False)
    clock[0] += 9 * 60
    assert _step_end(callback, 6) == (False, False)
    clock[0] += 61
    assert _step_end(callback, 7) == (True, False)  # 10 minutes since the last completed save
    callback.stop.signum = signal.SIGURG
    assert _step_end(callback, 8) == (True, True)  # save, then stop
    assert callback.stopped
    assert _step_end(callback, 100, max_steps=100) == (False, False)  # the model is saved anyway


def test_ctrl_c_is_a_stop_signal_not_a_keyboard_interrupt():
    """SIGINT, as the other stop signals, only marks the run to save and stop."""
    import os

    from scdpo.train.checkpoint import _StopFlag

    assert signal.SIGINT in STOP_SIGNALS
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    flag = _StopFlag()
    try:
        flag.install()
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next bytecode
        os.kill(os.getpid(), signal.SIGINT)  # a launcher passing Ctrl-C on: still no interrupt
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert flag.signum == signal.SIGINT


FULL_RECIPE = {
    **RECIPE,
    "batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 64,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
}


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_trainer_args_reach_trls_config_and_bad_names_are_refused(stage, tmp_path):
    tokenizer = SimpleNamespace(eos_token="</s>")
    recipe = {**FULL_RECIPE, "beta": 0.1}
    extra = {"weight_decay": 0.01, "max_grad_norm": 0.5, "adam_beta2": 0.95}
    config = cli.build_config(stage, {**recipe, "trainer_args": extra}, tmp_path, tokenizer, False)
    assert (config.weight_decay, config.max_grad_norm, config.adam_beta2) == (0.01, 0.5, 0.95)
    plain = cli.build_config(stage, recipe, tmp_path, tokenizer, False)
    assert (plain.weight_decay, plain.max_grad_norm) == (0.0, 1.0)  # TRL's defaults otherwise
    with pytest.raises(SystemExit, match=r"\['weight_decy'\] is not an argument of trl\."):
        cli.build_config(
            stage, {**recipe, "trainer_args": {"weight_decy": 0.1}}, tmp_path, tokenizer, 0
        )
    # A key the recipe sets itself (learning_rate is `learning_rate`, seed is `seed`) is refused.
    with pytest.raises(SystemExit, match=r"\['learning_rate', 'seed'\] already set"):
        taken = {"learning_rate": 1.0, "seed": 3}
        cli.build_config(stage, {**recipe, "trainer_args": taken}, tmp_path, tokenizer, 0)
