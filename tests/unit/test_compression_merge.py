"""Run directories: the merged model equals the LoRA model; bad run dirs fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from compression_runs import smoke_run
from safetensors.numpy import load_file

from rantune.compression.merge import ADAPTER_NAME, load_run, read_run_config
from rantune.federated import workload
from rantune.lora import load_trainable_state


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return smoke_run(tmp_path_factory.getbasetemp() / "compression", "los")


def test_merged_model_matches_the_adapted_model(run_dir):
    # Prepare: the peft model exactly as the run built it, with its adapter loaded
    run = load_run(run_dir)
    peft_model = workload.build_model(workload.model_spec(run.config))
    state = {k: torch.from_numpy(v.copy()) for k, v in load_file(run_dir / ADAPTER_NAME).items()}
    load_trainable_state(peft_model, state)
    x = torch.randn(5, 2, 16, 32) / 20
    # Execute
    with torch.no_grad():
        expected, merged = peft_model.eval()(x), run.model(x)
    # Assert: same numbers, no LoRA modules left, nothing trainable
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    assert not any("lora" in name for name, _ in run.model.named_modules())
    assert not any(p.requires_grad for p in run.model.parameters())
    assert run.source_info()["config_hash"] == json.loads(
        (run_dir / "config.json").read_text()
    )["config-hash"]  # fmt: skip


def test_centralized_run_with_nested_sections_only(run_dir, tmp_path):
    # Prepare: keep only the contract keys of config.json
    raw = json.loads((run_dir / "config.json").read_text())
    minimal = {k: raw[k] for k in ("task", "seed", "data", "model", "lora")}
    shutil.copy(run_dir / ADAPTER_NAME, tmp_path / ADAPTER_NAME)
    (tmp_path / "config.json").write_text(json.dumps(minimal))
    # Execute
    cfg, _ = read_run_config(tmp_path)
    run = load_run(tmp_path)
    # Assert
    assert cfg.task == "los" and cfg.lora.targets == ("q_proj", "v_proj")
    x = torch.randn(3, 2, 16, 32) / 20
    torch.testing.assert_close(run.model(x), load_run(run_dir).model(x))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / ADAPTER_NAME).unlink(), "has no global_adapter"),
        (lambda d: (d / ADAPTER_NAME).write_bytes(b"garbage"), "cannot be read"),
        (lambda d: (d / "config.json").write_text("{"), "not readable JSON"),
        (lambda d: (d / "config.json").write_text('{"seed": 1}'), "does not name the run's task"),
        (lambda d: (d / "config.json").write_text('{"task": "tetris"}'), "task"),
    ],
)
def test_damaged_run_dirs_fail_clearly(run_dir, tmp_path, damage, message):
    # Prepare
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    damage(broken)
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        load_run(broken)


def test_adapter_of_another_model_is_refused(run_dir, tmp_path):
    # Prepare: the adapter of a rank-4 run under a config that says rank 8
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    raw = json.loads((broken / "config.json").read_text())
    raw["flat"]["lora.r"] = 8
    (broken / "config.json").write_text(json.dumps(raw))
    # Execute / Assert
    with pytest.raises(ValueError, match="does not fit the model"):
        load_run(broken)


def test_compression_never_imports_flwr():
    # Prepare: a meta-path hook that refuses flwr
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'flwr' or name.startswith('flwr.'):\n"
        "            raise ImportError('flwr blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import compression.pipeline, compression.quantize_server, server.inference\n"
        "print('ok', [m for m in sys.modules if m.startswith('flwr')])\n"
    )
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Assert
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok []" in result.stdout
