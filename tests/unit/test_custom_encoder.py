"""Bring your own encoder: ``model.encoder`` (+ ``model.checkpoint``) end to end.

A gated token mixer defined in ``custom_encoders.py`` (linears ``to_q``/``to_v``, no
attention blocks) is fine-tuned federatedly on the in-process engine with FedAvg and
a LoRA-aware rule, only its adapters and the head travel, ``rantune compress`` exports
it to ONNX matching PyTorch, and every broken entry point is an InputError that the CLI
reports with exit 2 before writing anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from rantune.client.app import app as client_app
from rantune.compression.export import FP32_TOLERANCE, run_onnx
from rantune.compression.merge import load_run
from rantune.compression.pipeline import encoder_variants
from rantune.compression.prune import structured_prune
from rantune.errors import InputError
from rantune.federated import workload
from rantune.federated.messages import HEAD_PREFIX
from rantune.federated.run_config import resolve_run_config
from rantune.model import ChannelEncoder, Encoder, model_config, token_layout
from rantune.model.custom import build_encoder, save_encoder_weights
from rantune.server.strategies import strategy_names
from rantune.simulations.cli import app
from rantune.simulations.engine import resolve_config, run_simulation
from rantune.tasks import TASKS, get_task
from rantune.tasks.prediction import slots_for_radio

HERE = Path(__file__).resolve().parent
ENTRY = "custom_encoders:build"  # this folder is on sys.path under pytest
FILE_ENTRY = f"{HERE / 'custom_encoders.py'}:build"
CUSTOM = {
    "data.preset": "smoke",
    "task": "los",
    "model.encoder": ENTRY,
    "lora.targets": "to_q,to_v",
    "lora.r": 2,
    "num-server-rounds": 1,
}
runner = CliRunner()


def _overrides(extra: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in {**CUSTOM, **extra}.items())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A 1-round ``rantune simulate`` with ffa-lora (a LoRA-aware rule) on the custom encoder."""
    out = tmp_path_factory.mktemp("byoe") / "run"
    result = runner.invoke(
        app, ["simulate", "--strategy", "ffa-lora", "--rounds", "1", "--out", str(out),
              "--run-config", _overrides({})],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_shipped_and_custom_encoders_meet_one_contract():
    # Prepare
    shipped = ChannelEncoder(model_config("tiny"))
    custom = build_encoder(FILE_ENTRY, 16, 32, seed=0)

    # Execute
    layouts = [token_layout(e, 16, 32) for e in (shipped, custom)]

    # Assert: both satisfy the protocol; heads see only the layout
    assert isinstance(shipped, Encoder) and isinstance(custom, Encoder)
    assert (layouts[0].d_model, layouts[0].patch_antennas, layouts[0].patch_subcarriers) == (
        64,
        4,
        4,
    )
    assert (layouts[1].d_model, layouts[1].patch_antennas, layouts[1].patch_subcarriers) == (
        16,
        4,
        8,
    )
    assert layouts[1].patch_dim == 64


@pytest.mark.parametrize("task", TASKS)
def test_every_task_head_sits_on_the_custom_encoder(task):
    # Prepare
    cfg = resolve_run_config({**CUSTOM, "task": task})
    spec = workload.model_spec(cfg)
    model = workload.build_model(spec)
    sequence = get_task(task, cfg.task_options).input_rank == 5
    slots = (slots_for_radio(spec.radio, cfg.task_options.horizon, task),) if sequence else ()

    # Execute
    with torch.no_grad():
        out = model(torch.randn(3, *slots, 2, 16, 32))

    # Assert: class logits, positions, or CSI mapped back from the 4 x 8 token patches
    expected = {"los": (3, 2), "positioning": (3, 2), "prediction": (3, 2, 16, 32)}
    assert tuple(out.shape) == expected.get(task, (3, 16))
    assert torch.isfinite(out).all()


def test_same_seed_same_encoder_and_checkpoint_is_loaded(tmp_path):
    # Prepare
    a = build_encoder(ENTRY, 16, 32, seed=5)
    b = build_encoder(ENTRY, 16, 32, seed=5)
    other = build_encoder(ENTRY, 16, 32, seed=6)
    path = save_encoder_weights(other, tmp_path / "mixer.safetensors")

    # Execute
    loaded = build_encoder(ENTRY, 16, 32, checkpoint=str(path), seed=5)

    # Assert
    weight = "layers.0.to_q.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], other.state_dict()[weight])
    assert torch.equal(loaded.state_dict()[weight], other.state_dict()[weight])


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    # Prepare
    path = save_encoder_weights(
        build_encoder(f"{FILE_ENTRY}_plain", 16, 32), tmp_path / "p.safetensors"
    )

    # Execute / Assert
    with pytest.raises(InputError, match="does not fit MixerEncoder"):
        build_encoder(ENTRY, 16, 32, checkpoint=str(path))


def test_fedavg_round_trains_the_custom_encoder_and_only_adapters_travel(tmp_path):
    # Prepare
    cfg = resolve_config({**CUSTOM, "strategy.name": "fedavg", "out-dir": str(tmp_path / "run")})
    initial = workload.initial_global_state(workload.model_spec(cfg))
    sent: list[set[str]] = []

    def recording_client(message, context):
        reply = client_app(message, context)
        for content in (message.content, reply.content):
            sent.extend(set(record) for record in content.array_records.values())
        return reply

    # Execute
    history = run_simulation(cfg, client_app=recording_client)

    # Assert: adapters of to_q/to_v and the head, nothing of the frozen base
    assert set(initial) and all(".lora_" in k or k.startswith(HEAD_PREFIX) for k in initial)
    assert {k.split(".encoder.")[-1].split(".lora_")[0] for k in initial if ".lora_" in k} == {
        "layers.0.to_q", "layers.0.to_v", "layers.1.to_q", "layers.1.to_v",
    }  # fmt: skip
    assert sent and all(keys == set(initial) for keys in sent)
    assert history["rounds"][-1]["round"] == 1
    final = load_file(str(tmp_path / "run" / "global_adapter.safetensors"))
    b_keys = [k for k in initial if ".lora_B." in k]  # zero at init: training moves them
    assert any(np.abs(final[k]).max() > 0 for k in b_keys)


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_completes_a_round_on_the_custom_encoder(tmp_path, strategy):
    # Prepare
    cfg = resolve_config({**CUSTOM, "strategy.name": strategy, "out-dir": str(tmp_path)})

    # Execute
    history = run_simulation(cfg)

    # Assert
    assert history["rounds"][-1]["round"] == 1
    assert np.isfinite(history["rounds"][-1]["server"]["loss"])


def test_lora_aware_rule_via_cli_and_compress_to_onnx(cli_run, tmp_path):
    # Prepare
    art = tmp_path / "ART"

    # Execute
    made = runner.invoke(app, ["compress", "--run", str(cli_run), "--out", str(art),
                               "--variants", "fp32", "--max-eval", "32"])  # fmt: skip

    # Assert: ffa-lora trained (lora_B moved), the fp32 artifact matches PyTorch
    assert made.exit_code == 0, made.output
    run = load_run(cli_run)
    assert type(run.model.encoder).__name__ == "MixerEncoder"
    manifest = json.loads((art / "fp32" / "manifest.json").read_text())
    assert manifest["source"]["encoder"] == ENTRY
    assert manifest["details"]["parity_max_abs"] <= FP32_TOLERANCE
    x = torch.randn(5, 2, 16, 32)
    x = x / x.flatten(1).norm(dim=1)[:, None, None, None]
    with torch.no_grad():
        reference = run.model(x).numpy()
    got = run_onnx(art / "fp32" / "model.onnx", x.numpy())
    assert np.abs(got - reference).max() <= FP32_TOLERANCE
    adapter = load_file(str(cli_run / "global_adapter.safetensors"))
    assert any(np.abs(v).max() > 0 for k, v in adapter.items() if ".lora_B." in k)


def test_students_need_the_shipped_encoder(cli_run, tmp_path):
    # Prepare
    run = load_run(cli_run)
    logged: list[str] = []

    # Execute
    kept = encoder_variants(
        ("fp32", "pruned-int8", "distilled-int8"), run.model, False, logged.append
    )
    asked = runner.invoke(app, ["compress", "--run", str(cli_run), "--out", str(tmp_path / "A"),
                                "--variants", "pruned-int8"])  # fmt: skip

    # Assert: left out by default, refused when asked for, nothing written
    assert kept == ("fp32",) and "left out" in logged[0]
    with pytest.raises(InputError, match="shipped encoder"):
        structured_prune(run.model, torch.zeros(2, 2, 16, 32))
    assert asked.exit_code == 2 and "custom" in asked.stderr
    assert not (tmp_path / "A").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model.encoder": "no_such_module_xyz:build"}, "no module named 'no_such_module_xyz'"),
        ({"model.encoder": "custom_encoders:nothing"}, "has no attribute 'nothing'"),
        ({"model.encoder": "custom_encoders:NOT_CALLABLE"}, "non-callable"),
        ({"model.encoder": "custom_encoders:not_a_module"}, "not a torch.nn.Module"),
        ({"model.encoder": "custom_encoders:wrong_shape"}, "expected (cls [2, 16], tokens [2, 16, 16])"),
        ({"model.encoder": "custom_encoders"}, "is not an entry point"),
        ({"lora.targets": "q_proj,v_proj"}, "name no module of MixerEncoder"),
        ({"model.checkpoint": "/nowhere/w.safetensors"}, "expected an existing .safetensors"),
        ({"model.encoder": "", "model.checkpoint": "w.safetensors"}, "model.encoder is empty"),
    ],
)  # fmt: skip
def test_bad_encoder_is_a_clear_error_exit_2_and_writes_nothing(tmp_path, extra, message):
    # Prepare
    out = tmp_path / "run"

    # Execute
    result = runner.invoke(app, ["simulate", "--out", str(out), "--run-config", _overrides(extra)])

    # Assert
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_no_lora_target_lists_the_modules_it_has():
    # Prepare
    cfg = resolve_run_config({**CUSTOM, "lora.targets": "q_proj"})

    # Execute / Assert
    with pytest.raises(InputError) as info:
        workload.build_model(workload.model_spec(cfg))
    for name in ("to_q", "to_v", "to_out", "mix", "embed"):
        assert name in str(info.value)
