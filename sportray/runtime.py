"""Joining or starting the Ray cluster, and telling the user where to look.

Everything runs on Ray: `--address` joins an existing cluster (`auto`, `ray://host:10001` or
`host:6379`); without it a local single-node cluster starts, its dashboard on 127.0.0.1.
"""
from __future__ import annotations

import logging
import os
import stat


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True,
             worker_logs: bool = True) -> dict:
    """Start or join Ray once per process; returns {'dashboard_url': ..., 'address': ...}.

    worker_logs=False (a sweep): what workers and raylets print stays in Ray's log files
    (/tmp/ray/session_latest/logs) instead of the console; SPORTRAY_VERBOSE=1 brings it back."""
    import ray

    if not ray.is_initialized():
        from sportray.validate import check_address

        # Nothing at --address: a sportray message within seconds, not Ray's C++ retries.
        check_address(address)
        if address and address not in ("auto", "local") and not address.startswith("ray://"):
            # Ray 2.60 token auth: joining by host:port needs the token mode (DESIGN.md §5).
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        if os.environ.get("RAY_AUTH_MODE") == "token":
            private_token_file()
        kwargs = dict(address=address or None, ignore_reinit_error=True,
                      logging_level=logging.WARNING if quiet else logging.INFO,
                      log_to_driver=worker_logs or bool(os.environ.get("SPORTRAY_VERBOSE")))
        if quiet and not os.environ.get("SPORTRAY_VERBOSE"):
            # Ray Data's progress bars and INFO lines, Train's per-report line, Ray's own
            # deprecation warnings: off the console in the driver and in every worker of the job
            # (sportray/console.py; SPORTRAY_VERBOSE=1 keeps them).
            from sportray.console import quiet_env, quiet_process
            quiet_process()
            kwargs["runtime_env"] = {"env_vars": quiet_env(),
                                     "worker_process_setup_hook": "sportray.console.quiet_process"}
        if not address:
            missing = _dashboard_missing()
            if missing:
                # A minimal `ray` (no ray[default]) cannot serve the dashboard: run without it
                # rather than refuse to train, and say what to install.
                print(f"sportray: Ray dashboard disabled ({missing}); pip install 'ray[default]' "
                      "for the dashboard and the metrics endpoint", flush=True)
            kwargs.update(include_dashboard=not missing, dashboard_host="127.0.0.1", num_cpus=num_cpus)
        ctx = ray.init(**kwargs)
        url = getattr(ctx, "dashboard_url", None) or ""
        # Helpers Ray starts later (Tune's placement-group cleaner) look for "the" local
        # cluster; with two on one machine (a test session beside a sweep) they must be told.
        gcs = ray.get_runtime_context().gcs_address
        if gcs:
            os.environ.setdefault("RAY_ADDRESS", gcs)
    else:
        url = ray.get_runtime_context().gcs_address and _dashboard_url()
    if url and not url.startswith("http"):
        url = "http://" + url
    return {"dashboard_url": url, "address": address or "local"}


def token_file() -> str:
    """The Ray auth token file this process uses: $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")


def private_token_file(path: str | None = None) -> str:
    """The token is the cluster's password: a token file others can read is made 0600 (owner
    only), with a note. Returns the path ('' when there is no file)."""
    path = path or token_file()
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and st.st_uid == os.getuid():
        os.chmod(path, 0o600)
        print(f"sportray: {path} (the Ray auth token) was readable by other users; now 0600", flush=True)
    return path


def _dashboard_missing() -> str:
    """'' when Ray's dashboard dependencies import, else the import error (Ray's own check)."""
    try:
        from ray._private.utils import get_dashboard_dependency_error
    except ImportError:
        return ""
    err = get_dashboard_dependency_error()
    return f"{type(err).__name__}: {err}" if err else ""


def _dashboard_url() -> str:
    try:
        from ray._private.worker import global_worker
        return global_worker.node.address_info.get("webui_url", "") or ""
    except Exception:
        return ""

