"""Is `--storage` shared by every node? Fail at start, not at the first checkpoint.

Ray Tune writes its experiment state and Ray Train its checkpoints under `--storage`; a
restored trial or a restarted worker group may run on *another* node and must read them back
there. On a multi-node cluster a node-local directory (the default `sportray-runs`) silently
splits a sweep across disks: checkpoints "vanish", `--resume` finds nothing, the probe stage
cannot open the final backbone. `check_shared_storage` refuses that before anything trains.

The rule, in order:

1. a URI with a scheme other than ``file://`` (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``...)
   is shared storage (pyarrow filesystems Ray Train understands);
2. one alive node -> anything goes;
3. all alive nodes on one host (the same node IP address, e.g. a two-node test cluster on one
   machine, or several raylets in containers sharing the host network) -> they share the
   local filesystem, so any path goes;
4. otherwise the path must lie on a network filesystem according to ``/proc/mounts`` of this
   (the driver's) node: nfs/nfs4, cifs/smb3, lustre, ceph, glusterfs, gpfs, beegfs, weka,
   any FUSE mount (s3fs, gcsfuse, juicefs, mountpoint-s3, ...). The check cannot see other
   nodes' mounts; mount the share at the same path on every node (cluster.yaml does).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from sportray.config import ConfigError

NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "cephfs", "glusterfs", "gpfs",
    "beegfs", "wekafs", "panfs", "ocfs2", "gfs2", "afs", "orangefs", "fuse", "fuseblk",
})  # AWS EFS and FSx for NetApp appear as nfs4; FSx for Lustre as lustre


def _is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype.startswith("fuse.")


def _unescape(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (\\040 ...)."""
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def mount_of(path: str, mounts_text: str) -> tuple[str, str]:
    """(mount point, fs type) of the longest mount point containing `path`."""
    best = ("/", "unknown")
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = _unescape(parts[1]), parts[2]
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def _alive_nodes(nodes: Iterable[Mapping] | None) -> list[Mapping]:
    if nodes is None:
        import ray
        nodes = ray.nodes()
    return [n for n in nodes if n.get("Alive", n.get("alive", False))]


def check_shared_storage(storage_path: str, *, nodes: Iterable[Mapping] | None = None,
                         mounts_text: str | None = None) -> None:
    """Raise ConfigError if a multi-host cluster is given node-local `--storage`.

    nodes: ``ray.nodes()`` records (default: ask the connected cluster); mounts_text: the
    content of ``/proc/mounts`` (default: read it). Both are parameters so the rule can be
    tested on any input. See the module docstring for the rule.
    """
    s = str(storage_path)
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if scheme and scheme != "file":
        return
    alive = _alive_nodes(nodes)
    if len(alive) <= 1:
        return
    hosts = {n.get("NodeManagerAddress") or n.get("node_ip") for n in alive}
    if len(hosts) <= 1:
        return  # several nodes, one host: they see the same filesystem
    local = s[len("file://"):] if scheme == "file" else s
    path = os.path.realpath(os.path.abspath(os.path.expanduser(local)))
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            mounts_text = ""
    point, fstype = mount_of(path, mounts_text)
    if _is_network_fs(fstype):
        return
    raise ConfigError(
        f"--storage {storage_path}: this Ray cluster has {len(alive)} nodes on {len(hosts)} hosts, but "
        f"{path} is on a node-local filesystem ({fstype} mounted at {point}). Tune state and Train "
        "checkpoints must be readable from every node, or resumed trials and the probe stage lose "
        "them. Pass a path on a network filesystem mounted at the same place on every node (NFS/EFS, "
        "Lustre, a FUSE mount of a bucket such as s3fs or mountpoint-s3), e.g. --storage "
        "/mnt/shared/sportray-runs (s3:// URIs themselves are not supported by sportray yet).")


def pid_alive(pid: int) -> bool:
    """Is process `pid` of this host running? (Whether a temporary folder's builder died.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

