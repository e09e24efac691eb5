"""The edge commands that run no model: ``info`` (what a bundle is, from ``model.json``),
``keygen`` and ``sign`` (:mod:`indvision.signing`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from indvision import signing
from indvision.edge import info as bundle_info
from indvision.edge.cli_common import BUNDLE_HELP
from indvision.edge.runtime import resolve_bundle
from indvision.layout import MODEL_JSON, SIGNATURE


def add(commands: Any) -> None:
    """The ``keygen``, ``sign`` and ``info`` subcommands."""
    keygen = commands.add_parser("keygen", help="make an Ed25519 key pair for signing "
                                                "bundles")
    keygen.add_argument("folder", metavar="DIR")
    keygen.set_defaults(run=keygen_command)
    sign = commands.add_parser("sign", help="sign a bundle's model.json (adds a signature; "
                                            "the same key signing again replaces its own)")
    sign.add_argument("bundle", help=BUNDLE_HELP)
    sign.add_argument("--key", required=True, metavar="PRIVATE", help="private key file")
    sign.add_argument("--signer", help="who signs (a name recorded beside the signature)")
    sign.set_defaults(run=sign_command)
    info = commands.add_parser("info", help="what a bundle is, where it came from, its "
                                            "lineage")
    info.add_argument("bundle", help=BUNDLE_HELP)
    info.add_argument("--json", action="store_true", help="the summary as JSON")
    info.set_defaults(run=info_command)


def info_command(args: argparse.Namespace) -> int:
    """``info``: model.json only, no runtime is loaded."""
    described = bundle_info.summary(args.bundle)
    print(json.dumps(described, indent=2) if args.json else bundle_info.text(described))
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    """``keygen DIR``: a key pair, and where each half goes."""
    private, public = signing.keygen(args.folder)
    print(f"private key {private} (keep it off the devices; export.signing_key or "
          f"{signing.SIGNING_KEY_ENV} names it)\npublic key {public} (give it to the devices: "
          f"--trust or {signing.TRUSTED_KEYS_ENV})")
    return 0


def sign_command(args: argparse.Namespace) -> int:
    """``sign BUNDLE --key PRIVATE``: adds (or replaces) this key's signature."""
    bundle = resolve_bundle(args.bundle)
    done = signing.sign_bundle(bundle, args.key, args.signer)
    what = "replaced its own earlier signature" if done["replaced"] else "added a signature"
    print(f"signed {bundle / MODEL_JSON} with key {done['key_id']}: {what}; "
          f"{done['signatures']} signature(s) in {bundle / SIGNATURE}")
    if done["dropped"]:
        print(f"warning: dropped signature(s) by {', '.join(done['dropped'])}: they no longer "
              "match model.json", file=sys.stderr)
    return 0
