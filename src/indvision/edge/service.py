"""``python -m indvision.edge serve BUNDLE``: the bundle as an HTTP service (FastAPI).

On a plant the model is called by other machines (a PLC gateway, the MES, a sorter's
controller). :func:`create_app` builds the application from
:mod:`~indvision.edge.service_core` (limits, decoding, predictions, the token) and
:mod:`~indvision.edge.service_routes` (the endpoints); :func:`serve` runs it with uvicorn.
FastAPI and uvicorn come with the optional ``[serve]`` extra and are imported only here, when
an app is built, so the runtime stays light. What each endpoint answers and how requests are
bounded: docs/serving.md.
"""

from __future__ import annotations

import sys
from typing import Any

from indvision.edge.hotswap import Follower, ModelSlot
from indvision.edge.service_core import (
    LOOPBACK_HOSTS,
    Limits,
    ServiceState,
    allowed_hosts,
    is_loopback,
    read_token,
)
from indvision.errors import IndvisionError

__all__ = ["Limits", "create_app", "is_loopback", "read_token", "serve"]


def create_app(slot: ModelSlot, token: str | None = None, limits: Limits | None = None,
               follower: Follower | None = None, hosts: list[str] | None = None) -> Any:
    """The FastAPI application serving ``slot``'s classifier; ``hosts``: the allowed ``Host``
    names (default: the loopback names)."""
    from indvision.edge.service_routes import build

    return build(ServiceState(slot, token, limits or Limits(), follower=follower,
                              hosts=hosts or list(LOOPBACK_HOSTS)))


def serve(slot: ModelSlot, host: str, port: int, token: str | None, limits: Limits,
          follower: Follower | None = None, extra_hosts: list[str] | None = None) -> None:
    """Run the service with uvicorn until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        raise IndvisionError("serve needs FastAPI and uvicorn: pip install "
                             "'indvision[serve]'") from None
    print(f"serve: http://{host}:{port}/ ({'token required' if token else 'no token'}), "
          f"{slot.get().bundle}", file=sys.stderr, flush=True)
    app = create_app(slot, token, limits, follower, allowed_hosts(host, extra_hosts))
    uvicorn.run(app, host=host, port=port, log_level="warning")
