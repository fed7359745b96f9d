"""Every script's commands around a trained model: --eval-model (play a saved file) and --track
(Weights & Biases, run offline here). CONTRACT.md section 6."""

import glob
import importlib.util
import json
import os
import struct

import numpy as np
import pytest
import torch
import tyro
from conftest import SCRIPTS, import_script, profile, read_scalars, run_dirs, run_script


def cli_main(name: str, *flags: str) -> dict:
    module = import_script(name)
    return module.main(tyro.cli(module.Args, args=list(flags)))


def env_of(name: str) -> str:
    return profile(name)["discrete_env"] or profile(name)["continuous_env"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny saved model per script, trained once: name -> (model path, eval returns after training)."""
    models = {}

    def get(name: str) -> tuple[str, list[float]]:
        if name not in models:
            cwd = tmp_path_factory.mktemp(name)
            result = run_script(name, *profile(name)["tiny"], "--env-id", env_of(name), "--save-model", cwd=cwd)
            assert result.returncode == 0, result.stderr
            [run_dir] = run_dirs(cwd)
            returns = [value for _, value in read_scalars(run_dir)["eval/episodic_return"]]
            models[name] = (str(run_dir / f"{name}.pt"), returns)
        return models[name]

    return get


def one_error_line(capsys, error: pytest.ExceptionInfo) -> str:
    assert error.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_model_replays_the_evaluation_after_training(name, trained, in_tmp_dir, capsys):
    model_path, returns_after_training = trained(name)
    assert len(returns_after_training) == 10, "the run should evaluate --eval-episodes (10) episodes"
    result = cli_main(name, "--eval-model", model_path, "--eval-episodes", "4")
    # The same file, the same seeds, the deterministic action: the first 4 episodes played again.
    assert result["eval_returns"] == pytest.approx(returns_after_training[:4])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{np.mean(returns_after_training[:4]):.2f} +- " in last_line
    assert run_dirs(in_tmp_dir) == [], "--eval-model must not start a training run"


@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_model_records_videos_or_explains(name, trained, in_tmp_dir, capsys):
    model_path, _ = trained(name)
    if importlib.util.find_spec("moviepy") is None:  # the video extra is not installed: one clear line
        with pytest.raises(SystemExit) as error:
            cli_main(name, "--eval-model", model_path, "--eval-episodes", "2", "--capture-video")
        assert "--capture-video" in one_error_line(capsys, error)
        return
    cli_main(name, "--eval-model", model_path, "--eval-episodes", "2", "--capture-video")
    run = os.path.basename(os.path.dirname(model_path))
    assert list((in_tmp_dir / "videos" / f"{run}-eval").glob("*.mp4")), "no video of the evaluation"


@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_model_renders_in_a_window(name, trained, in_tmp_dir, monkeypatch):
    model_path, returns_after_training = trained(name)
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a window without a display
    result = cli_main(name, "--eval-model", model_path, "--eval-episodes", "1", "--render")
    assert result["eval_returns"] == pytest.approx(returns_after_training[:1])


def bad_file(name: str, kind: str, model_path: str, tmp_path) -> str:
    path = tmp_path / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(b"not a torch file")
    elif kind == "foreign":  # another script's saved model
        torch.save({"algorithm": "ddpg" if name != "ddpg" else "ppo", "args": {}}, path)
    elif kind == "other_env":  # this script's file, with the weights of another env's network
        checkpoint = torch.load(model_path)
        checkpoint["args"]["env_id"] = "LunarLanderContinuous-v3" if name == "ddpg" else "Acrobot-v1"
        torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("kind, words", [("missing", "no such file"), ("corrupt", "not a model file"),
                                         ("foreign", "not a"), ("other_env", "do not fit")])  # fmt: skip
@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_model_refuses_a_bad_file_in_one_line(name, kind, words, trained, in_tmp_dir, capsys):
    model_path, _ = trained(name) if kind == "other_env" else (None, None)
    path = str(in_tmp_dir / "missing.pt") if kind == "missing" else bad_file(name, kind, model_path, in_tmp_dir)
    with pytest.raises(SystemExit) as error:
        cli_main(name, "--eval-model", path)
    line = one_error_line(capsys, error)
    assert words in line and path in line


@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_model_refuses_another_env_id(name, trained, in_tmp_dir, capsys):
    model_path, _ = trained(name)
    other = "MountainCarContinuous-v0" if name == "ddpg" else "Acrobot-v1"
    with pytest.raises(SystemExit) as error:
        cli_main(name, "--eval-model", model_path, "--env-id", other)
    line = one_error_line(capsys, error)
    assert env_of(name) in line and other in line


def wandb_records(run_folder: str):
    """The records of an offline W&B run file: a LevelDB-style log (7-byte file header, then 32 KiB
    blocks of chunks, each with a 7-byte header: checksum, length, type), each record a protobuf."""
    from wandb.proto import wandb_internal_pb2

    [path] = glob.glob(f"{run_folder}/run-*.wandb")
    data = open(path, "rb").read()
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, chunk_type = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if chunk_type in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@pytest.mark.parametrize("name", SCRIPTS)
def test_track_sends_config_and_scalars_to_an_offline_wandb_run(name, in_tmp_dir, monkeypatch):
    pytest.importorskip("wandb", reason="the track extra is not installed")
    # A process of its own: wandb keeps its settings (and its SummaryWriter patch) for the process.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    flags = [*profile(name)["tiny"], "--env-id", env_of(name), "--track", "--wandb-project-name", "tests"]
    videos = importlib.util.find_spec("moviepy") is not None
    result = run_script(name, *flags, *(["--capture-video"] if videos else []), cwd=in_tmp_dir)
    assert result.returncode == 0, result.stderr
    [run_dir] = run_dirs(in_tmp_dir)
    expected = {step: value for step, value in read_scalars(run_dir)["charts/episodic_return"]}
    [run_folder] = glob.glob(str(in_tmp_dir / "wandb" / "offline-run-*"))
    sent, config = {}, {}
    for record in wandb_records(run_folder):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "charts/episodic_return" in items:
                sent[items["global_step"]] = items["charts/episodic_return"]
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    assert expected and sent == pytest.approx(expected)
    assert config["env_id"] == env_of(name) and config["seed"] == 1
    if videos:  # the training videos are uploaded to the run as media
        assert glob.glob(f"{run_folder}/files/media/videos/*.mp4"), "no video reached the W&B run"


@pytest.mark.parametrize(
    "flag, module, extra", [("--capture-video", "moviepy", ".[video]"), ("--track", "wandb", ".[track]")]
)
@pytest.mark.parametrize("name", SCRIPTS)
def test_a_missing_optional_package_exits_2_with_the_install_command(
    name, flag, module, extra, in_tmp_dir, monkeypatch, capsys
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda wanted, *a: None if wanted == module else find_spec(wanted))
    with pytest.raises(SystemExit) as error:
        cli_main(name, *profile(name)["tiny"], flag)
    assert extra in one_error_line(capsys, error)
    assert run_dirs(in_tmp_dir) == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_render_without_eval_model_exits_2(name, in_tmp_dir, capsys):
    with pytest.raises(SystemExit) as error:
        cli_main(name, *profile(name)["tiny"], "--render")
    assert "--render" in one_error_line(capsys, error)
    assert run_dirs(in_tmp_dir) == []
