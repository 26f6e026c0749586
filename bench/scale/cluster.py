"""Ray, as the rig uses it: an optional extra, imported only here and only when asked for.

`connect(address)` joins an existing cluster (`ray.init(address=...)`: `auto`, `HOST:PORT` or a Ray Client
`ray://HOST:10001`) or, with no address, starts a private one on this machine. `node_record()` describes
the node a task or actor runs on, for its manifest: host, IP, Ray node id, the resources Ray assigned and
the node's totals, and the machine's hardware inventory.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from bench.errors import UsageError
from bench.hardware import inventory

INSTALL_HINT = "Ray is an optional extra: pip install 'selfhost-bench[ray]' (or pip install ray)"


def require_ray(what: str):
    """The ray module, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"{what} needs Ray, which is not installed. {INSTALL_HINT}") from None
    return ray


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str | None, what: str, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the cluster at `address` (or start a private one here when None); reuse a connection that this
    process already has. Returns what was joined, for the manifest."""
    ray = require_ray(what)
    if ray.is_initialized():
        return describe_cluster(ray, address, "already connected in this process")
    kwargs: dict[str, Any] = {"log_to_driver": True, "include_dashboard": False}
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UsageError(f"{what}: could not connect to {where} ({type(exc).__name__}: {exc})") from None
    return describe_cluster(ray, address, "connected" if address else "started a private Ray instance here")


def describe_cluster(ray, address: str | None, how: str) -> dict[str, Any]:
    nodes = alive_nodes(ray)
    return {
        "address": address,
        "how": how,
        "ray_version": ray.__version__,
        "nodes": [
            {"ray_node_id": n["NodeID"], "ip": n.get("NodeManagerAddress"), "resources": n.get("Resources", {})}
            for n in nodes
        ],
    }


def alive_nodes(ray) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


RAY_FIELDS = (
    "ip",
    "ray_node_id",
    "ray_job_id",
    "ray_worker_id",
    "ray_task_id",
    "assigned_resources",
    "accelerator_ids",
    "node_resources",
)


def node_record(in_ray: bool = True, include_hardware: bool = True) -> dict[str, Any]:
    """Where this process runs: host and, inside a Ray task or actor, the Ray node, what Ray assigned it and
    the node's total resources (None outside Ray: the same keys either way); plus the hardware inventory."""
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), **dict.fromkeys(RAY_FIELDS)}
    ray = None
    if in_ray:
        try:
            import ray
        except ImportError:
            ray = None
    if ray is not None and ray.is_initialized():
        ctx = ray.get_runtime_context()
        node_id = ctx.get_node_id()
        record.update(
            ray_node_id=node_id,
            ip=ray.util.get_node_ip_address(),
            ray_job_id=ctx.get_job_id(),
            ray_worker_id=ctx.get_worker_id(),
        )
        try:
            record["ray_task_id"] = ctx.get_task_id()
        except Exception:  # noqa: BLE001 - not inside a task
            pass
        try:
            record["assigned_resources"] = ctx.get_assigned_resources()
            record["accelerator_ids"] = {k: list(v) for k, v in ctx.get_accelerator_ids().items() if v}
        except Exception:  # noqa: BLE001 - older Ray, or the driver
            pass
        record["node_resources"] = next((n.get("Resources") for n in ray.nodes() if n.get("NodeID") == node_id), None)
    record["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    if include_hardware:
        record["hardware"] = inventory()
    return record
