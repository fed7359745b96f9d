"""The script contract (../shared/CONTRACT.md), checked for every algorithm script at the root."""

import ast
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import tyro
from conftest import (
    ALGORITHM_NAMES,
    CONTRACT_TAGS,
    ROOT,
    SCRIPT_PROFILES,
    SCRIPTS,
    import_script,
    profile,
    read_scalars,
    run_dirs,
    run_script,
)
from torch.utils.tensorboard import SummaryWriter

ALLOWED_THIRD_PARTY = {"numpy", "torch", "gymnasium", "tyro"}


def parse(name: str) -> ast.Module:
    return ast.parse((ROOT / f"{name}.py").read_text())


def assert_one_line_error(result: subprocess.CompletedProcess, *must_mention: str) -> None:
    assert result.returncode == 2, f"exit {result.returncode}, stderr: {result.stderr}"
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    for word in must_mention:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_scripts_exist():
    assert SCRIPTS, "no algorithm script found at the repository root"


@pytest.mark.parametrize("name", SCRIPTS)
def test_layout_and_documented_args(name):
    tree = parse(name)
    assert ast.get_docstring(tree), "module docstring missing"
    top_level = {node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    assert {"Args", "main"} <= top_level
    args_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    body = args_class.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            following = body[i + 1] if i + 1 < len(body) else None
            documented = isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant)
            assert documented, f"Args.{node.target.id} has no docstring"
    last = tree.body[-1]
    assert isinstance(last, ast.If) and "__main__" in ast.unparse(last.test)


@pytest.mark.parametrize("name", SCRIPTS)
def test_imports_only_the_allowed_stack(name):
    tree = parse(name)
    # wandb is optional (the track extra): imported only inside the functions --track calls.
    lazy = {
        id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef) for node in ast.walk(function)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            assert top not in ALGORITHM_NAMES, f"{name}.py imports the script {top}.py"
            allowed = ALLOWED_THIRD_PARTY | ({"wandb"} if id(node) in lazy else set())
            assert top in sys.stdlib_module_names or top in allowed, f"{name}.py imports {module}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_import_has_no_side_effects(name, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {name}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_every_flag(name, tmp_path):
    result = run_script(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module = __import__(name)
    for field in module.Args.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in result.stdout, f"--help does not show {field}"


BAD_FLAG_CASES = [
    pytest.param(name, flags, flag_name, id=f"{name}:{' '.join(flags)}")
    for name in SCRIPTS
    for flags, flag_name in SCRIPT_PROFILES.get(name, {}).get("bad_flags", [])
]


@pytest.mark.parametrize("name,flags,flag_name", BAD_FLAG_CASES)
def test_bad_flag_values_exit_2_with_one_line(name, flags, flag_name, tmp_path):
    result = run_script(name, *flags, cwd=tmp_path)
    assert_one_line_error(result, flag_name)
    assert run_dirs(tmp_path) == [], "a run folder was made before the flags were checked"


@pytest.mark.parametrize("name", SCRIPTS)
def test_unparseable_flag_exits_2_without_traceback(name, tmp_path):
    result = run_script(name, "--seed", "not-a-number", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_env_id(name, tmp_path):
    result = run_script(name, "--env-id", "NoSuchEnv-v0", cwd=tmp_path)
    assert_one_line_error(result, "NoSuchEnv-v0")


@pytest.mark.parametrize("name", SCRIPTS)
def test_unsupported_space(name, tmp_path):
    env_id = profile(name)["unsupported_env"]
    result = run_script(name, "--env-id", env_id, cwd=tmp_path)
    assert_one_line_error(result, env_id)


SMOKE_CASES = [
    pytest.param(name, kind, id=f"{name}:{kind}")
    for name in SCRIPTS
    for kind in ["discrete_env", "continuous_env"]
    if SCRIPT_PROFILES.get(name, {}).get(kind, "missing") is not None
]


@pytest.mark.parametrize("name,kind", SMOKE_CASES)
def test_smoke_run_writes_tags_and_an_evaluable_model(name, kind, tmp_path):
    env_id = profile(name)[kind]
    result = run_script(
        name, *profile(name)["tiny"], "--env-id", env_id, "--save-model", "--eval-episodes", "2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    [run_dir] = run_dirs(tmp_path)
    assert run_dir.name.startswith(f"{env_id}__{name}__1__")
    assert f"runs/{run_dir.name}" in result.stdout.splitlines()[-1], "the last line should name the run folder"

    scalars = read_scalars(run_dir)
    for tag in CONTRACT_TAGS:
        assert scalars.get(tag), f"tag {tag} was not written"
    assert any(tag.startswith("losses/") for tag in scalars)

    model_path = run_dir / f"{name}.pt"
    checkpoint = torch.load(model_path)
    assert checkpoint, "the saved model is empty"
    assert len(scalars["eval/episodic_return"]) == 2


@pytest.mark.parametrize("name", SCRIPTS)
def test_same_seed_gives_identical_returns(name, tmp_path):
    returns = []
    for attempt in range(2):
        cwd = tmp_path / str(attempt)
        cwd.mkdir()
        result = run_script(name, *profile(name)["tiny"], "--seed", "7", cwd=cwd)
        assert result.returncode == 0, result.stderr
        [run_dir] = run_dirs(cwd)
        returns.append([value for _, value in read_scalars(run_dir)["charts/episodic_return"]])
    assert returns[0], "no episode finished"
    assert returns[0] == returns[1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_ctrl_c_stops_cleanly_and_saves(name, tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / f"{name}.py"), "--total-timesteps", "10000000", "--save-model"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not run_dirs(tmp_path) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # let training start
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert "Traceback" not in stderr
    assert process.returncode != 0
    [run_dir] = run_dirs(tmp_path)
    assert (run_dir / f"{name}.pt").exists(), "the model was not saved on Ctrl-C"
    assert list(run_dir.glob("events.out.tfevents.*")), "the TensorBoard file is missing"


@pytest.mark.parametrize("name", SCRIPTS)
def test_ctrl_c_inside_a_tensorboard_write_waits_for_a_safe_point(name, in_tmp_dir, monkeypatch):
    """A KeyboardInterrupt raised inside SummaryWriter.add_scalar can queue an event without waking
    the writer's thread, so closing the writer stalls; the first Ctrl-C must only ask the loop to
    stop (seen once in CI: ppo.py saved its model, then did not exit within 30 s)."""
    module = import_script(name)
    original_add_scalar = SummaryWriter.add_scalar
    calls = {"count": 0, "interrupted_inside": 0}

    def add_scalar(self, *args, **kwargs):
        calls["count"] += 1
        try:
            if calls["count"] == 3:
                os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C in the middle of a write
            return original_add_scalar(self, *args, **kwargs)
        except KeyboardInterrupt:
            calls["interrupted_inside"] += 1
            raise

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    handler_before = signal.getsignal(signal.SIGINT)
    flags = [*profile(name)["tiny"], "--total-timesteps", "10000000", "--save-model"]
    with pytest.raises(SystemExit) as stopped:
        module.main(tyro.cli(module.Args, args=flags))
    assert stopped.value.code == 130
    assert calls["interrupted_inside"] == 0, "the Ctrl-C was raised inside a TensorBoard write"
    assert signal.getsignal(signal.SIGINT) is handler_before, "main() left its Ctrl-C handler installed"
    [run_dir] = run_dirs(in_tmp_dir)
    assert (run_dir / f"{name}.pt").exists(), "the model was not saved on Ctrl-C"


@pytest.mark.parametrize("name", SCRIPTS)
def test_capture_video_records_or_explains(name, tmp_path):
    flags = [*profile(name)["tiny"], "--env-id", profile(name)["discrete_env"] or profile(name)["continuous_env"]]
    result = run_script(name, *flags, "--capture-video", cwd=tmp_path)
    if result.returncode == 2:  # the video extra is not installed: one clear line
        assert_one_line_error(result, "--capture-video")
    else:
        assert result.returncode == 0, result.stderr
        assert list((tmp_path / "videos").glob("*/*.mp4")), "no video was written"
