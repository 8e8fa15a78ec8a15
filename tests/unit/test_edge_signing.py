"""Ed25519 signatures over manifest.json: keygen, sign, verify; tampered manifests,
other keys, unsigned or damaged artifacts and non-Ed25519 keys are refused."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
from compression_runs import edge_artifact, smoke_onnx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rantune.compression.pipeline import compress
from rantune_edge import EdgeError, EdgeModel
from rantune_edge.signing import (
    SIGNATURE_NAME,
    fingerprint,
    generate_keypair,
    load_private_key,
    sign_artifact,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return generate_keypair(root / "builder.pem"), generate_keypair(root / "other.pem")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")["onnx"]


@pytest.fixture
def signed(onnx_path, keys, tmp_path):
    artifact = edge_artifact(tmp_path / "art", onnx_path)
    sign_artifact(artifact, load_private_key(keys[0][0]))
    return artifact


def test_keygen_writes_a_private_key_only_its_owner_reads(keys):
    # Prepare
    (private, public), _ = keys
    # Execute
    mode = stat.S_IMODE(private.stat().st_mode)
    # Assert: PKCS#8 / SubjectPublicKeyInfo PEM, 0600, never overwritten
    assert mode == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert public.name == "builder.pub.pem"
    with pytest.raises(EdgeError, match="never overwrites"):
        generate_keypair(private)


def test_signed_artifact_verifies_with_the_builders_key(signed, keys):
    # Prepare
    (private, public), _ = keys
    # Execute
    model = EdgeModel(signed, public_key=public)
    # Assert
    assert model.signature == "verified"
    assert model.key_id == fingerprint(load_private_key(private).public_key())
    assert json.loads((signed / SIGNATURE_NAME).read_text())["public_key_sha256"] == model.key_id
    assert EdgeModel(signed).signature == "unchecked"


def test_changed_manifest_is_refused(signed, keys):
    # Prepare: a claim changed after signing (the labels swapped)
    path = signed / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["label_names"] = ["los", "nlos"]
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # Execute / Assert
    with pytest.raises(EdgeError, match="changed after signing"):
        EdgeModel(signed, public_key=keys[0][1])


def test_manifest_and_model_replaced_together_are_refused(signed, keys, onnx_path, tmp_path):
    # Prepare: an attacker's artifact with a consistent sha256, signed by their key
    fake = edge_artifact(tmp_path / "fake", onnx_path, labels=("los", "nlos"))
    sign_artifact(fake, load_private_key(keys[1][0]))
    for name in ("manifest.json", SIGNATURE_NAME, "model.onnx"):
        shutil.copyfile(fake / name, signed / name)
    # Execute / Assert: the sha256 matches, the signature names another key
    with pytest.raises(EdgeError, match="signed by another key"):
        EdgeModel(signed, public_key=keys[0][1])


def test_unsigned_or_damaged_signature_is_refused_when_a_key_is_given(signed, keys):
    # Prepare
    public = keys[0][1]
    (signed / SIGNATURE_NAME).write_text('{"algorithm": "ed25519", "signature": "@@"}')
    # Execute / Assert
    with pytest.raises(EdgeError, match="is damaged"):
        EdgeModel(signed, public_key=public)
    (signed / SIGNATURE_NAME).unlink()
    with pytest.raises(EdgeError, match="is not signed"):
        EdgeModel(signed, public_key=public)
    assert EdgeModel(signed).signature == "unsigned"


def test_openssl_keys_work(onnx_path, tmp_path):
    # Prepare: the README's openssl commands
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed here")
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    artifact = edge_artifact(tmp_path / "art", onnx_path)
    # Execute
    sign_artifact(artifact, load_private_key(key))
    # Assert
    assert EdgeModel(artifact, public_key=pub).signature == "verified"


def test_non_ed25519_and_non_key_files_are_refused(tmp_path):
    # Prepare
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "junk.pem").write_text("not a key")
    # Execute / Assert
    with pytest.raises(EdgeError, match="not an Ed25519 key"):
        load_private_key(tmp_path / "rsa.pem")
    with pytest.raises(EdgeError, match="not a readable PEM private key"):
        load_private_key(tmp_path / "junk.pem")
    with pytest.raises(EdgeError, match="does not exist"):
        load_private_key(tmp_path / "missing.pem")


def test_compress_refuses_a_bad_key_before_any_work(tmp_path):
    # Prepare
    (tmp_path / "junk.pem").write_text("not a key")
    # Execute / Assert: fails on the key before reading the (missing) run; writes nothing
    with pytest.raises(EdgeError, match="not a readable PEM private key"):
        compress(tmp_path / "no-run", tmp_path / "ART", "fp32", sign_key=tmp_path / "junk.pem")
    assert not (tmp_path / "ART").exists()


def test_runtime_without_cryptography_runs_unsigned_and_explains_the_extra(signed, keys):
    # Prepare: a process where cryptography cannot be imported (the minimal install)
    script = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "cryptography":
                    raise ImportError("not installed")

        sys.meta_path.insert(0, Block())
        from rantune_edge import EdgeError, EdgeModel
        print(EdgeModel({str(signed)!r}).signature)
        try:
            EdgeModel({str(signed)!r}, public_key={str(keys[0][1])!r})
        except EdgeError as err:
            print(err)
        """
    )
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    # Assert
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "unchecked"
    assert "pip install 'rantune-edge[verify]'" in result.stdout
