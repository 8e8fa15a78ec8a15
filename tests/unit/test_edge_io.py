"""Station-shaped I/O: complex CSI -> the model's float layout as the manifest says, and
raw outputs -> labels / probabilities / top-k, or complex CSI back in the input's units."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compression_runs import edge_artifact, smoke_onnx

from rantune.compression.export import run_onnx
from rantune.model.encoder import real_to_csi
from rantune.tasks import predict
from rantune_edge import EdgeError, EdgeModel, io
from rantune_edge.manifest import Manifest, normalization_for, normalization_rule


def manifest(
    input_shape: list, output_shape: list, labels=(), output_kind=None, **extra
) -> Manifest:
    output = {"name": "output", "shape": output_shape, "dtype": "float32"}
    if output_kind is not None:
        output["kind"] = output_kind
    return Manifest(
        task="t",
        variant="fp32",
        input={"name": "csi", "shape": input_shape, "dtype": "float32"},
        output=output,
        model={"file": "model.onnx", "sha256": "0" * 64, "size_bytes": 1},
        source={},
        label_names=list(labels),
        **extra,
    )


def complex_csi(*shape: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


SNAPSHOT = manifest(["batch", 2, 4, 8], ["batch", 2], ("nlos", "los"))
SNAPSHOT_SHAPE = (None, 2, 4, 8)
SEQUENCE = manifest(
    ["batch", 3, 2, 4, 8], ["batch", 2, 4, 8], normalization=normalization_for([0] * 5)
)
SEQUENCE_SHAPE = (None, 3, 2, 4, 8)


def test_complex_snapshot_is_scaled_to_unit_norm_and_stacked():
    # Prepare: station units (a path-loss-like gain per row)
    csi = complex_csi(5, 4, 8) * np.array([1e-3, 1e-4, 1.0, 7.0, 1e-6])[:, None, None]
    # Execute
    x, scale = io.model_input(csi, SNAPSHOT, SNAPSHOT_SHAPE)
    # Assert: [N, 2, A, S] float32, real then imaginary, unit Frobenius norm per row
    assert x.shape == (5, 2, 4, 8) and x.dtype == np.float32
    np.testing.assert_allclose((x**2).sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x[:, 0] + 1j * x[:, 1], csi / scale[:, None, None], rtol=1e-5)
    np.testing.assert_allclose(scale, np.linalg.norm(csi.reshape(5, -1), axis=1), rtol=1e-6)


def test_sequence_slots_share_the_norm_of_slot_zero():
    # Prepare: slot 1 twice as strong as slot 0
    csi = complex_csi(2, 3, 4, 8)
    csi[:, 1] = 2 * csi[:, 0]
    # Execute
    x, _ = io.model_input(csi * 1e-4, SEQUENCE, SEQUENCE_SHAPE)
    # Assert: [N, T, 2, A, S]; slot 0 has unit norm, slot 1 keeps its relative power
    assert x.shape == (2, 3, 2, 4, 8)
    power = (x**2).sum(axis=(2, 3, 4))
    np.testing.assert_allclose(power[:, 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(power[:, 1], 4.0, rtol=1e-5)


def test_no_normalize_and_the_float_layout_pass_through():
    # Prepare
    csi = complex_csi(3, 4, 8)
    floats = np.stack([csi.real, csi.imag], axis=1).astype(np.float32)
    # Execute
    raw, raw_scale = io.model_input(csi, SNAPSHOT, SNAPSHOT_SHAPE, normalize=False)
    same, same_scale = io.model_input(floats, SNAPSHOT, SNAPSHOT_SHAPE)
    # Assert
    np.testing.assert_array_equal(raw, floats)
    np.testing.assert_array_equal(same, floats)
    assert (raw_scale == 1).all() and (same_scale == 1).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: c.real.astype(np.float32), "without its imaginary part"),
        (lambda c: c[:, :, :4], "complex CSI \\[batch, 4, 8\\]: axis 2 is 4"),
        (lambda c: c[0], "add a batch axis"),
        (lambda c: np.where(np.arange(8) == 3, np.nan, c), "NaN or infinite values in 3 row"),
        (lambda c: np.concatenate([c, 0 * c[:1]]), r"row\(s\) \[3\] are all zeros"),
        (lambda c: c[:0], "empty batch"),
        (lambda c: c.tolist(), "must be a numpy array"),
    ],
)
def test_bad_csi_is_refused(make, message):
    # Prepare
    bad = make(complex_csi(3, 4, 8))
    # Execute / Assert
    with pytest.raises(EdgeError, match=message):
        io.model_input(bad, SNAPSHOT, SNAPSHOT_SHAPE)


def test_classification_output_has_names_probabilities_and_top_k():
    # Prepare
    beams = manifest(["batch", 2, 4, 8], ["batch", 4], [f"beam-{i}" for i in range(4)])
    logits = np.array([[0.0, 3.0, 1.0, -1.0], [2.0, 0.0, 0.0, 5.0]], np.float32)
    # Execute
    result = io.decode_output(logits, beams, np.ones(2), top_k=2)
    # Assert
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    assert result["top_k"].tolist() == [[1, 2], [3, 0]]
    assert result["labels"].tolist() == ["beam-1", "beam-3"]
    assert (np.diff(result["top_k_probabilities"], axis=1) <= 0).all()
    lines = [json.loads(line) for line in io.json_lines(result)]
    assert [line["label"] for line in lines] == ["beam-1", "beam-3"]
    assert [t["label"] for t in lines[1]["top_k"]] == ["beam-3", "beam-0"]
    assert lines[0]["probabilities"]["beam-1"] == pytest.approx(result["probabilities"][0, 1])


def test_label_count_mismatch_and_bad_top_k_are_refused():
    # Prepare
    logits = np.zeros((2, 3), np.float32)
    # Execute / Assert
    with pytest.raises(EdgeError, match="names 2 labels but the model outputs 3"):
        io.decode_output(logits, SNAPSHOT, np.ones(2))
    with pytest.raises(EdgeError, match="top_k=0"):
        io.decode_output(np.zeros((2, 2), np.float32), SNAPSHOT, np.ones(2), top_k=0)


def test_csi_output_returns_to_the_input_units():
    # Prepare
    output = np.stack([np.ones((2, 4, 8)), -np.ones((2, 4, 8))], axis=1).astype(np.float32)
    # Execute
    result = io.decode_output(output, SEQUENCE, np.array([2.0, 1e-3]))
    # Assert: complex64 [N, A, S], multiplied back by each row's scale
    assert result["csi"].shape == (2, 4, 8) and result["csi"].dtype == np.complex64
    np.testing.assert_allclose(result["csi"][0], 2 - 2j)
    np.testing.assert_allclose(result["csi"][1], 1e-3 - 1e-3j, rtol=1e-6)
    line = json.loads(next(io.json_lines(result)))
    assert line["csi"]["real"][0][0] == 2.0 and line["csi"]["imag"][0][0] == -2.0


def test_position_output_is_metres_per_row():
    # Prepare
    positioning = manifest(["batch", 2, 4, 8], ["batch", 2], output_kind="position")
    output = np.array([[10.0, -3.5], [120.0, 40.0]], np.float32)
    # Execute
    result = io.decode_output(output, positioning, np.array([1e-3, 5.0]))
    # Assert: coordinates untouched by the CSI scale; one JSON line per row
    np.testing.assert_array_equal(result["position_m"], output)
    assert [json.loads(line)["position_m"] for line in io.json_lines(result)] == output.tolist()


def test_manifests_without_kind_or_scope_get_them_from_shapes():
    # Prepare: fields as manifests written before these keys existed
    old = {"csi": "unit norm", "layout": "float32 [..., 2, A, S]"}
    snapshot = manifest(["batch", 2, 4, 8], ["batch", 2], ("a", "b"), normalization=dict(old))
    sequence = manifest(["batch", 3, 2, 4, 8], ["batch", 2, 4, 8], normalization=dict(old))
    # Execute / Assert
    assert snapshot.output_kind == "logits" and sequence.output_kind == "csi"
    assert normalization_rule(snapshot) == ("unit-frobenius", "snapshot")
    assert normalization_rule(sequence) == ("unit-frobenius", "first-slot")


def test_npz_output_is_atomic_and_checked(tmp_path):
    # Prepare
    result = io.decode_output(np.zeros((2, 2), np.float32), SNAPSHOT, np.ones(2))
    (tmp_path / "dir.npz").mkdir()
    # Execute
    path = io.save_npz(tmp_path / "r.npz", result)
    # Assert: readable without pickles; bad paths refused
    with np.load(path, allow_pickle=False) as loaded:
        assert loaded["labels"].tolist() == ["nlos", "nlos"]
    with pytest.raises(EdgeError, match="must end in .npz"):
        io.save_npz(tmp_path / "r.npy", result)
    with pytest.raises(EdgeError, match="is a directory"):
        io.save_npz(tmp_path / "dir.npz", result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npz", "r.npz"]


def _artifact(tmp_path_factory, task: str) -> tuple[dict, EdgeModel]:
    exported = smoke_onnx(tmp_path_factory.getbasetemp() / "compression", task)
    art = edge_artifact(tmp_path_factory.mktemp("io") / task, exported["onnx"])
    return exported, EdgeModel(art)


@pytest.fixture(scope="module")
def los(tmp_path_factory):
    return _artifact(tmp_path_factory, "los")


def test_los_artifact_predicts_from_complex_csi_like_the_float_layout(los):
    # Prepare: training-scaled rows as complex CSI, then at a station's gain
    exported, model = los
    x = exported["x"][:16].numpy()
    csi = x[:, 0] + 1j * x[:, 1]
    # Execute
    raw = model.predict_csi(csi, normalize=False)
    station = model.predict_csi(csi * 3e-5)
    # Assert: --no-normalize equals the float layout; the normalized path is scale-free
    np.testing.assert_array_equal(raw["logits"], run_onnx(exported["onnx"], x))
    unit = csi / np.linalg.norm(csi.reshape(16, -1), axis=1)[:, None, None]
    expected = model.predict(np.stack([unit.real, unit.imag], axis=1).astype(np.float32))
    np.testing.assert_allclose(station["logits"], expected, atol=1e-5)
    assert set(station["labels"].tolist()) <= {"nlos", "los"}


@pytest.fixture(scope="module")
def prediction(tmp_path_factory):
    return _artifact(tmp_path_factory, "prediction")


def test_prediction_artifact_takes_complex_slots_and_returns_complex_csi(prediction):
    # Prepare: [N, T_in, A, S] complex slots in station units
    exported, model = prediction
    x = exported["x"][:8]  # [N, T_in, 2, A, S], slot 0 at unit norm
    slots = real_to_csi(x).numpy()  # [N, T_in, A, S]
    gain = np.array([1e-4, 1.0, 5.0, 2e-3, 1.0, 1.0, 3.0, 1e-2])
    # Execute
    result = model.predict_csi(slots * gain[:, None, None, None])
    # Assert: the PyTorch model's prediction, in the station's units, complex64
    assert model.manifest.output_kind == "csi"
    assert result["csi"].shape == slots.shape[:1] + slots.shape[2:]
    expected = real_to_csi(predict(exported["run"].model, x)).numpy()
    scale = gain * np.linalg.norm(slots[:, 0].reshape(8, -1), axis=1)
    np.testing.assert_allclose(
        result["csi"] / scale[:, None, None], expected, atol=1e-5 * np.abs(expected).max()
    )
