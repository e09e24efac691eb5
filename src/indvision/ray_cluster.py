"""Reaching Ray: the one place ``--ray`` connects to a cluster or starts a local one.

Batch inference (:mod:`indvision.edge.ray_predict`), fold fan-out (:mod:`indvision.ray_folds`) and
ensemble members (:mod:`indvision.training.ray_members`) all start here. Ray is the optional
``[scale]`` extra: without it, one line says how to install it. TF-free.
"""

from __future__ import annotations

from typing import Any

from indvision.errors import IndvisionError


def _ray() -> Any:
    """The ``ray`` module, or one clear line saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise IndvisionError("--ray needs Ray Data: pip install 'indvision[scale]'") from None
    return ray


def start(address: str | None, quiet: bool = True) -> Any:
    """Connect to ``address`` (``auto``, ``ray://host:port``) or start a local Ray for this job
    (``address`` None). One clear line when the cluster cannot be reached."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address or "local", include_dashboard=False,
                 log_to_driver=not quiet, configure_logging=True,
                 logging_level="ERROR" if quiet else "INFO")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise IndvisionError(f"--ray {where}: cannot start or reach the cluster "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from None
    return ray
