"""Signed bundles (:mod:`indvision.signing`): keys, signatures over model.json, and one clear
line for every way a bundle can fail its check. A stand-in bundle (model.json and a file)
is enough here; tests/edge/test_signing.py runs real bundles through the edge runtime."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from indvision import signing
from indvision.errors import IndvisionError


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: signing.keygen(tmp_path / "keys" / name) for name in ("build", "qa", "other")}


def stand_in(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"classes": ["ok", "dent"],
                                                    "files": {"model.onnx": {"sha256": "ab"}}}))
    return folder


def test_keygen_makes_a_private_key_only_its_owner_reads_and_never_overwrites(
        tmp_path: Path) -> None:
    private, public = signing.keygen(tmp_path / "k")
    assert "pub" in public.name and private.name == signing.PRIVATE_NAME
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert signing.key_id(signing.load_public_key(public)) == signing.key_id(
        signing.load_private_key(private).public_key())
    with pytest.raises(IndvisionError, match="already exists"):
        signing.keygen(tmp_path / "k")


def test_a_signed_bundle_passes_and_any_change_to_model_json_fails(
        tmp_path: Path, keys: dict) -> None:
    bundle = stand_in(tmp_path / "bundle")
    done = signing.sign_bundle(bundle, keys["build"][0], signer="export")
    assert signing.check_signature(bundle, [keys["build"][1]]) == done["key_id"]
    text = (bundle / "model.json").read_text()
    (bundle / "model.json").write_text(text.replace('"ab"', '"cd"'))  # a rewritten hash
    with pytest.raises(IndvisionError, match="changed after signing"):
        signing.check_signature(bundle, [keys["build"][1]])


def test_a_second_key_adds_a_signature_and_the_same_key_replaces_its_own(
        tmp_path: Path, keys: dict) -> None:
    bundle = stand_in(tmp_path / "bundle")
    signing.sign_bundle(bundle, keys["build"][0])
    qa = signing.sign_bundle(bundle, keys["qa"][0], signer="qa")
    assert qa == {"key_id": qa["key_id"], "replaced": False, "dropped": [], "signatures": 2}
    again = signing.sign_bundle(bundle, keys["qa"][0])
    assert again["replaced"] and again["signatures"] == 2
    for _, public in (keys["build"], keys["qa"]):
        signing.check_signature(bundle, [public])
    # model.json changes (verify's verdicts, say): re-signing drops the signatures it broke
    (bundle / "model.json").write_text('{"classes": ["ok"]}')
    resigned = signing.sign_bundle(bundle, keys["build"][0])
    assert resigned["dropped"] == [qa["key_id"]] and resigned["signatures"] == 1


@pytest.mark.parametrize("damage, message", [
    ("unsigned", "unsigned bundle"),
    ("wrong key", "not by a trusted key"),
    ("truncated", "damaged signature file"),
    ("bad base64", "damaged signature file"),
    ("key_id a list", "damaged signature file"),
    ("entry not a mapping", "damaged signature file"),
])
def test_every_failed_check_is_one_line_naming_the_problem(
        tmp_path: Path, keys: dict, damage: str, message: str) -> None:
    bundle = stand_in(tmp_path / "bundle")
    signing.sign_bundle(bundle, keys["build"][0])
    sig = bundle / signing.SIGNATURE
    trusted = [keys["build"][1]]
    if damage == "unsigned":
        sig.unlink()
    elif damage == "wrong key":
        trusted = [keys["other"][1]]
    elif damage == "truncated":
        sig.write_bytes(sig.read_bytes()[: len(sig.read_bytes()) // 2])
    else:
        record = json.loads(sig.read_text())
        if damage == "bad base64":
            record["signatures"][0]["signature"] = "not*base64"
        elif damage == "key_id a list":
            record["signatures"][0]["key_id"] = ["not", "an", "id"]
        else:
            record["signatures"][0] = "just text"
        sig.write_text(json.dumps(record))
    with pytest.raises(IndvisionError, match=message) as raised:
        signing.check_signature(bundle, trusted)
    assert "\n" not in str(raised.value)


def test_a_public_key_where_a_private_one_belongs_is_named(tmp_path: Path, keys: dict) -> None:
    with pytest.raises(IndvisionError, match="not a PEM private key"):
        signing.sign_bundle(stand_in(tmp_path / "b"), keys["build"][1])
    with pytest.raises(IndvisionError, match="cannot read the public key"):
        signing.check_signature(tmp_path / "b", [tmp_path / "missing.pub.pem"])


def test_trusted_keys_come_from_the_argument_else_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, f"{tmp_path / 'a.pem'}:{tmp_path / 'b.pem'}")
    assert signing.trusted_key_paths() == [tmp_path / "a.pem", tmp_path / "b.pem"]
    assert signing.trusted_key_paths(["c.pem"]) == [Path("c.pem")]
    monkeypatch.delenv(signing.TRUSTED_KEYS_ENV)
    assert signing.trusted_key_paths() == []


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_private_key_others_can_read_is_refused_with_one_line(
        tmp_path: Path, keys: dict, mode: int) -> None:
    private = keys["build"][0]
    private.chmod(mode)
    with pytest.raises(IndvisionError) as raised:
        signing.sign_bundle(stand_in(tmp_path / "b"), private)
    message = str(raised.value)
    assert message.startswith(f"{private}: private key readable by others")
    assert f"chmod 600 {private}" in message and "\n" not in message
    assert not (tmp_path / "b" / signing.SIGNATURE).exists()
    private.chmod(0o600)
    assert signing.sign_bundle(tmp_path / "b", private)["signatures"] == 1
