"""``edge serve``: the bundle behind HTTP (:mod:`indvision.edge.service`), optionally
following ``latest.json`` (:mod:`indvision.edge.hotswap`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from indvision import signing
from indvision.edge.cli_common import add_bundle_command, warn_if_unverified
from indvision.edge.runtime import EdgeClassifier


def add(commands: Any) -> None:
    """The ``serve`` subcommand: address, token, limits and --follow."""
    sub = add_bundle_command(commands, "serve", "an HTTP service: POST /predict, "
                             "/predict/object; GET /model, /healthz, /metrics, and a live "
                             "page at /")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only)")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                     help="also answer requests whose Host header is NAME (besides --host "
                          "and localhost); others get 400 (DNS rebinding)")
    sub.add_argument("--token-file", metavar="FILE",
                     help="require 'Authorization: Bearer <token>' (the file's one line, "
                          "16+ characters) on every endpoint but /healthz")
    sub.add_argument("--follow", nargs="?", const="", default=None, metavar="DIR",
                     help="reload when DIR/latest.json changes (default DIR: BUNDLE, an "
                          "exports/<pipeline> folder); a bad bundle is refused and the "
                          "old one keeps serving")
    sub.add_argument("--follow-interval", type=float, default=2.0, metavar="S")
    sub.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB",
                     help="larger request bodies get 413 (default 20)")
    sub.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                     help="images whose header claims more pixels get 422 before "
                          "decoding (default 40 M)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``serve`` until Ctrl-C; exit 2 when a non-loopback address has no token."""
    from indvision.edge import hotswap, service

    if not service.is_loopback(args.host) and not args.token_file:
        print(f"error: --host {args.host} reaches other machines: give --token-file too",
              file=sys.stderr)
        return 2
    token = service.read_token(args.token_file) if args.token_file else None
    limits = service.Limits(int(args.max_body_mb * 1e6), args.max_pixels)
    follow = None if args.follow is None else (args.follow or args.bundle)
    slot = hotswap.ModelSlot(_loader(args, follow or args.bundle))
    signing.warn_if_unchecked(slot.get().bundle, slot.get().signed_by)
    warn_if_unverified(slot.get())
    follower = None
    if follow is not None:
        follower = hotswap.Follower(slot, follow, args.follow_interval)
        follower.start()
    try:
        service.serve(slot, args.host, args.port, token, limits, follower, args.allowed_host)
    finally:
        if follower is not None:
            follower.stop()
    return 0


def _loader(args: argparse.Namespace, source: str) -> Any:
    """``load()`` for the model slot: ``source``'s classifier; ``--allow-rollback`` lets the
    first load through only, later rollbacks are refused."""
    allow_rollback = [args.allow_rollback]

    def load() -> EdgeClassifier:
        allow, allow_rollback[0] = allow_rollback[0], False
        return EdgeClassifier(source, args.model, allow_unshippable=args.allow_unshippable,
                              spin_wait=not args.no_spin_wait, runtime=args.runtime,
                              trusted_keys=args.trust, allow_rollback=allow)

    return load
