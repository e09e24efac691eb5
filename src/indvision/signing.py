"""Signed bundles: Ed25519 signatures over ``model.json`` (the ``cryptography`` package).

A bundle's sha256 records (``model.json`` lists every model file's hash; ``model.json.sha256``
and ``latest.json`` hold ``model.json``'s) stop accidents, not someone who rewrites every record
consistently. A signature over the exact bytes of ``model.json``, made with a private key that
never travels with the bundle, closes that: changing any model file or field breaks it.

``python -m indvision.edge keygen DIR`` makes a key pair (``indvision_signing.key``, private,
owner-readable only; ``indvision_signing.pub.pem``, for the devices). ``model.json.sig`` holds
one or more signatures, each with its key's id (16 hex digits of the raw public key's sha256):
:func:`sign_bundle` adds one per key (a re-sign replaces that key's; stale ones are dropped,
and said so). :func:`check_signature` accepts a bundle when a trusted key's signature matches
``model.json`` byte for byte; anything else is one :class:`~indvision.errors.IndvisionError`
line. TF-free: the edge runtime imports it; ``cryptography`` only where a key is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indvision import atomic, layout
from indvision.errors import IndvisionError
from indvision.layout import MAX_MODEL_JSON_BYTES, MODEL_JSON, SIGNATURE

PRIVATE_NAME = "indvision_signing.key"
PUBLIC_NAME = "indvision_signing.pub.pem"
FORMAT = "indvision-signature/1"
SIGNING_KEY_ENV = "INDVISION_SIGNING_KEY"
TRUSTED_KEYS_ENV = "INDVISION_TRUSTED_KEYS"  # paths separated by os.pathsep
MAX_SIGNATURE_BYTES = 2**20  # model.json.sig: one small entry per signer


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise IndvisionError("signatures need the cryptography package: pip install "
                             "cryptography (it comes with indvision)") from None
    return serialization, ed25519


def keygen(folder: str | os.PathLike) -> tuple[Path, Path]:
    """A new Ed25519 key pair in ``folder``: (private key path, public key path). Refuses to
    overwrite an existing key."""
    serialization, ed25519 = _crypto()
    folder = Path(folder)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise IndvisionError(f"{path}: already exists; a key is never overwritten "
                                 "(choose another folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndvisionError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic.write_bytes(private_path, private_pem, mode=0o600)  # owner only, from creation on
    atomic.write_bytes(public_path, public_pem)
    return private_path, public_path


def _read_key(path: str | os.PathLike, private: bool) -> Any:
    serialization, ed25519 = _crypto()
    kind = "private" if private else "public"
    try:
        with open(Path(path).expanduser(), "rb") as handle:
            data = handle.read()
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        raise IndvisionError(f"{path}: cannot read the {kind} key ({exc.strerror or exc})"
                             ) from None
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise IndvisionError(f"{path}: not a PEM {kind} key ({exc})") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise IndvisionError(f"{path}: not an Ed25519 {kind} key (make one with "
                             "python -m indvision.edge keygen DIR)")
    if private and os.name == "posix" and mode & 0o077:
        raise IndvisionError(f"{path}: private key readable by others (mode "
                             f"{stat.S_IMODE(mode):04o}); refused — chmod 600 {path} "
                             "(and make a new key if others may have read it)")
    return key


def load_private_key(path: str | os.PathLike) -> Any:
    """The Ed25519 private key at ``path``; refused when group or others may read it."""
    return _read_key(path, private=True)


def load_public_key(path: str | os.PathLike) -> Any:
    return _read_key(path, private=False)


def _raw(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    """A public key's id: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def read_signatures(bundle: Path) -> list[dict[str, Any]]:
    """The signatures in ``bundle/model.json.sig`` ([] when there is none)."""
    path = bundle / SIGNATURE
    if not path.is_file():
        return []
    try:
        raw = layout.read_bounded(path, MAX_SIGNATURE_BYTES, SIGNATURE)  # a few hundred bytes
        record = json.loads(raw.decode("utf-8"))
        signatures = record["signatures"]
        if record.get("format") != FORMAT or not isinstance(signatures, list):
            raise ValueError(f"expected format {FORMAT}")
        for entry in signatures:
            if not isinstance(entry, dict) or not isinstance(entry.get("key_id"), str):
                raise ValueError("each signature needs a text key_id")
            base64.b64decode(entry["signature"], validate=True)
    except (IndvisionError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IndvisionError(f"{path}: damaged signature file ({exc}); sign the bundle again "
                             "with python -m indvision.edge sign") from None
    return signatures


def _matches(public_key: Any, message: bytes, entry: dict[str, Any]) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(entry["signature"]), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_bundle(bundle: str | os.PathLike, private_key_path: str | os.PathLike,
                signer: str | None = None) -> dict[str, Any]:
    """Sign ``bundle/model.json`` with the private key at ``private_key_path``; returns
    ``{"key_id", "replaced", "dropped", "signatures"}`` (see the module docstring)."""
    bundle = Path(bundle)
    model_json = bundle / MODEL_JSON
    message = layout.read_bounded(model_json, MAX_MODEL_JSON_BYTES, MODEL_JSON)
    key = load_private_key(private_key_path)
    public = key.public_key()
    own = key_id(public)
    kept, replaced, dropped = [], False, []
    for entry in read_signatures(bundle):
        if entry["key_id"] == own:
            replaced = True
        elif _entry_key_matches(entry, message):
            kept.append(entry)
        else:
            dropped.append(entry["key_id"])
    kept.append({"key_id": own, "public_key": base64.b64encode(_raw(public)).decode("ascii"),
                 "signature": base64.b64encode(key.sign(message)).decode("ascii"),
                 "model_json_sha256": hashlib.sha256(message).hexdigest(),
                 "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "signer": signer})
    atomic.write_json(bundle / SIGNATURE, {"format": FORMAT, "algorithm": "Ed25519",
                                           "signatures": kept})
    return {"key_id": own, "replaced": replaced, "dropped": dropped, "signatures": len(kept)}


def require_verified(bundle: Path, model: str, entry: dict[str, Any],
                     signed_by: str | None) -> None:
    """Under a trusted key (``signed_by`` set), refuse a model file that verify never judged.

    Export signs its ``model.json`` for the record, before verify runs: a trusted signature
    alone says who built the bundle, not that its files reproduce the Keras model. Only a file
    the signed ``model.json`` marks ``verified: true`` runs under trusted keys (a ``shippable:
    false`` one is refused before this). Without trusted keys nothing changes.
    """
    if signed_by is not None and entry.get("verified") is not True:
        raise IndvisionError(f"{Path(bundle) / model}: exported but never verified (no "
                             "verdict in model.json) and trusted keys are set; run the verify "
                             "stage on this bundle's run")


def _entry_key_matches(entry: dict[str, Any], message: bytes) -> bool:
    """Whether an entry still matches ``message`` under the public key it carries."""
    _, ed25519 = _crypto()
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(
            base64.b64decode(entry.get("public_key", ""), validate=True))
    except ValueError:
        return False
    return _matches(public, message, entry)


def unchecked_warning(bundle: str | os.PathLike, signed_by: str | None) -> str | None:
    """The line a runtime prints once when ``bundle`` is signed but no trusted key checked it
    (None when it was checked, or is unsigned: an unsigned bundle without keys runs as it
    always did, without a line on every command)."""
    if signed_by is not None or not (Path(bundle) / SIGNATURE).is_file():
        return None
    return (f"warning: {Path(bundle) / SIGNATURE}: this bundle is signed, but its signature is "
            f"not checked (no --trust key or {TRUSTED_KEYS_ENV})")


def warn_if_unchecked(bundle: str | os.PathLike, signed_by: str | None) -> None:
    """Print :func:`unchecked_warning`'s line on stderr, if there is one."""
    warning = unchecked_warning(bundle, signed_by)
    if warning:
        print(warning, file=sys.stderr)


def trusted_key_paths(explicit: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """``explicit`` (``--trust``), else ``INDVISION_TRUSTED_KEYS`` (paths joined by
    ``os.pathsep``), else none."""
    if explicit:
        return [Path(p).expanduser() for p in explicit]
    raw = os.environ.get(TRUSTED_KEYS_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def check_signature(bundle: str | os.PathLike, trusted: Sequence[str | os.PathLike],
                    message: bytes | None = None) -> str:
    """Accept ``bundle`` only when a trusted key signed its ``model.json`` as it is; returns
    that key's id. One clear error otherwise (see the module docstring). ``message``: the
    ``model.json`` bytes the caller read once and goes on to parse (checking a second read
    would let a file swapped in between run unsigned); None reads the file here."""
    bundle = Path(bundle)
    keys = {key_id(k): k for k in map(load_public_key, trusted)}
    path = bundle / SIGNATURE
    if not path.is_file():
        raise IndvisionError(f"{bundle}: unsigned bundle (no {SIGNATURE}) and trusted keys "
                             "are set; sign it with python -m indvision.edge sign BUNDLE "
                             "--key PRIVATE")
    signatures = read_signatures(bundle)
    if message is None:
        message = layout.read_bounded(bundle / MODEL_JSON, MAX_MODEL_JSON_BYTES, MODEL_JSON)
    by_trusted = [e for e in signatures if e["key_id"] in keys]
    if not by_trusted:
        signers = ", ".join(sorted({e["key_id"] for e in signatures})) or "nobody"
        raise IndvisionError(f"{path}: signed by {signers}, not by a trusted key "
                             f"({', '.join(sorted(keys))})")
    for entry in by_trusted:
        if _matches(keys[entry["key_id"]], message, entry):
            return entry["key_id"]
    raise IndvisionError(f"{bundle / MODEL_JSON}: does not match its signature by "
                         f"{by_trusted[0]['key_id']}: changed after signing (or the signature "
                         "is damaged); do not run it")
