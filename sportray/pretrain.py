"""LeJEPA pretraining on Ray Train: the per-worker loop, its diagnostics and checkpoints.

One run = one `TorchTrainer.fit()`. Each worker streams uint8 frames from its shard of the
frame store, builds the views on its own device, and steps AdamW on the LeJEPA loss; DDP
(gloo on CPU, NCCL on GPU) averages gradients and SIGReg all-reduces its statistics.

Read top to bottom: build model and step (`train_step`, which bench/ runs too) -> diagnostics ->
failures -> the worker's loop (restore, step, log and checkpoint) -> final backbone. The driver
side (`run_pretrain`) is at the end. Ray is imported inside the functions that run under it
(`import ray.train` costs ~1 s): bench/ imports this module for `train_step` without Ray.
"""
from __future__ import annotations

import errno
import importlib
import json
import math
import os
import statistics
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from sportray.config import ConfigError, PretrainConfig, parse_views

STATE_FILE = "train_state.pt"
BACKBONE_DIR = "backbone"


# ----------------------------------------------------------------------------- model

def build_model(cfg: PretrainConfig, base_path: str = "") -> tuple[nn.Module, nn.Module]:
    """(backbone, loss head) for the arm. Seeded: every rank builds the same initial weights."""
    from sportray import backbones
    from sportray.lejepa import LeJEPA

    torch.manual_seed(cfg.seed)
    if cfg.arm == "scratch":
        backbone = backbones.build_backbone(cfg.model, seed=cfg.seed)
    else:
        backbone = resolve_base(base_path or cfg.base)
        backbone = backbones.add_lora(backbone, r=cfg.lora_rank, alpha=cfg.lora_alpha)
    head = LeJEPA(backbone.embed_dim, cfg.proj_dim, cfg.sigreg_directions, cfg.lambda_sigreg,
                  hidden_dim=cfg.proj_hidden)
    return backbone, head


class LeJEPAStep(nn.Module):
    """Backbone over every view group + the LeJEPA head, as ONE forward.

    DDP all-reduces gradients only for a forward through its own wrapper, so the whole step
    (all view groups, then the loss) must be a single call of the wrapped module: calling the
    backbone and head directly would train a separate model per rank."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head
        # The callable that encodes views: the backbone, or its compiled view with --compile.
        # Not a registered submodule, so parameters and state_dict keys appear once.
        object.__setattr__(self, "encode", backbone)

    def forward(self, views: list[torch.Tensor], directions: torch.Tensor) -> dict:
        embeddings = []
        for v in views:
            count, b = v.shape[:2]
            embeddings.append(self.encode(v.flatten(0, 1)).view(count, b, -1))
        return self.head(embeddings, directions=directions)


def step_forward(model: nn.Module, step_module: LeJEPAStep, cfg: PretrainConfig, world: int):
    """The callable that runs a step's forward, (views, directions) -> loss dict.

    --compile on one worker compiles the whole forward (every view group's backbone pass, the
    projector and the loss) into one graph, and so its backward into one too: the eager head and
    loss cost twice the reference's kernels (issue 17). With several workers only the backbone is
    compiled: SIGReg's and GlobalBatchNorm1d's gradient-carrying all_reduce does not trace."""
    if not cfg.compile:
        return model
    if world == 1:
        return torch.compile(model)
    object.__setattr__(step_module, "encode", torch.compile(step_module.backbone))
    return model


def train_step(forward, optimizer, trainable, frames: torch.Tensor, groups, cfg: PretrainConfig, step: int,
               *, offset: int = 0, total: int | None = None, proj_dim: int | None = None) -> tuple[dict, torch.Tensor]:
    """One optimisation step on uint8 frames already on the device: lr, views, forward, backward,
    clip, AdamW. Returns (loss dict, gradient norm before clipping), as tensors: nothing here
    waits for the GPU, so the CPU queues the next step while this one runs.

    Views and SIGReg directions are drawn on the CPU from (seed, step) and reach the device in
    pinned non-blocking copies (the same numbers on CPU and GPU; no device generator to sync on).
    Views are drawn for the global batch of `total` frames and sliced from `offset` (this rank's
    frames), so sample i of a step gets the same views with 1 or N workers."""
    from sportray.lejepa import draw_directions
    from sportray.views import make_views, view_generator

    device = frames.device
    on_gpu = device.type == "cuda"
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, cfg)
    directions = draw_directions(proj_dim or cfg.proj_dim, cfg.sigreg_directions, step, cfg.seed, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        views = make_views(frames, groups, view_generator(cfg.seed, step),
                           global_scale=(cfg.global_crop_min, cfg.global_crop_max),
                           local_scale=(cfg.local_crop_min, cfg.local_crop_max), offset=offset,
                           total=total or frames.shape[0], compiled=cfg.compile and on_gpu)
        out = forward(views, directions)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    grad_norm = clip_gradients(trainable, cfg.clip)
    optimizer.step()
    return out, grad_norm


def resolve_base(base: str):
    """The frozen base of the LoRA arm: a DINOv3 weights file or a sportray checkpoint dir."""
    from sportray import backbones

    if not base:
        raise ConfigError("--base is required for --arm lora: a DINOv3 weights file (.pth/.safetensors), "
                          "a sportray checkpoint directory, or synthetic-demo")
    path = Path(base)
    if path.is_dir():
        backbone, _meta = backbones.load_checkpoint(path)
        return backbone
    return backbones.load_dinov3(str(path))


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup then cosine to lr/1000 (the LeJEPA reference schedule for ViTs)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr / 1000
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- diagnostics

class DivergenceGuard:
    """NaN/Inf -> diverged at once; loss above `factor` x running median for `patience`
    logged steps in a row -> diverged (a spike that does not recover, the study's lesson)."""

    def __init__(self, factor: float, patience: int, window: int = 25):
        self.factor, self.patience = factor, patience
        self.history: deque[float] = deque(maxlen=window)
        self.spiking = 0
        self.spikes = 0

    def update(self, loss: float, grad_norm: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"non-finite loss ({loss}) or grad norm ({grad_norm})"
        if len(self.history) >= 5:
            median = statistics.median(self.history)
            if loss > self.factor * median:
                self.spiking += 1
                self.spikes += 1
                if self.spiking >= self.patience:
                    return (f"loss {loss:.4g} above {self.factor} x running median {median:.4g} "
                            f"for {self.spiking} logged steps")
                return None  # spiking values stay out of the median
            self.spiking = 0
        self.history.append(loss)
        return None

    def state(self) -> dict:
        return {"history": list(self.history), "spiking": self.spiking, "spikes": self.spikes}

    def load(self, state: dict) -> None:
        self.history.extend(state["history"])
        self.spiking, self.spikes = state["spiking"], state["spikes"]


def clip_gradients(params, clip: float) -> torch.Tensor:
    """Clip the global gradient norm to `clip` (0 = off); returns the norm *before* clipping,
    the diagnostic that shows an instability building up even when clipping hides it."""
    return torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"), foreach=True)


def _norm(tensors) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


# ----------------------------------------------------------------------------- failures

class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota...); the previous one is untouched."""


class BatchDoesNotFitError(RuntimeError):
    """The batch (frames x views) does not fit the device's memory; the message says what to change."""


def report_checkpoint(report: dict, directory, storage: str, step: int) -> None:
    """ray.train.report with a checkpoint, which Ray Train copies into the run's storage (pyarrow).
    A full disk there raised a bare pyarrow OSError naming neither the storage nor the remedy;
    here it becomes a CheckpointWriteError that does. Ray registers a checkpoint only once its copy
    has finished, so the last good one is what a re-run resumes from."""
    import ray.train

    try:
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(directory)
                         if directory is not None else None)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(exc):
            raise
        raise CheckpointWriteError(
            errno.ENOSPC, f"cannot save the step-{step} checkpoint into {storage}: the disk is full "
            f"({exc}); the previous checkpoint is kept. Free space there and re-run the same "
            f"command: training resumes from the last checkpoint") from None


def write_state(state: dict, directory) -> Path:
    """Write `state` as directory/train_state.pt: a .tmp, fsync, then os.replace, so a failed
    write (a full disk) leaves the previous checkpoint whole and no partial file behind.

    Through a Python file object: torch.save on a path reports ENOSPC only as a cryptic
    "unexpected pos 576 vs 534"; with a file object the OSError(ENOSPC) is raised, or (when
    it strikes mid-file) chained under that RuntimeError. Either way it becomes an error that
    names the path and says the disk is full."""
    final = Path(directory) / STATE_FILE
    tmp = final.with_name(STATE_FILE + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as raised:
        tmp.unlink(missing_ok=True)  # a partial file would only eat more of the disk
        exc = raised
        while exc is not None and not isinstance(exc, OSError):
            exc = exc.__cause__ or exc.__context__
        if exc is None:
            raise  # not an I/O error (e.g. something that does not pickle)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointWriteError(
                exc.errno, f"cannot write checkpoint {final}: the disk is full ({exc.strerror}); "
                f"the previous checkpoint is kept. Free space on that disk and re-run: "
                f"training resumes from the last checkpoint") from None
        raise CheckpointWriteError(exc.errno, f"cannot write checkpoint {final}: {exc.strerror or exc}") from exc
    return final


def oom_message(batch_size: int, views: str, device: str, *, workers: int = 1, total_bytes: int = 0,
                free_bytes: int = 0, peak_bytes: int = 0, detail: str = "") -> str:
    """What to tell the user when a step runs out of device memory (pure: unit-tested)."""
    groups = parse_views(views)
    per_frame = sum(count for count, _ in groups)
    mpix = batch_size * sum(count * size * size for count, size in groups) / 1e6
    memory = ""
    if total_bytes:
        gib = 2.0 ** 30
        memory = (f" ({peak_bytes / gib:.1f} GiB peak allocated by this worker, {free_bytes / gib:.1f} GiB "
                  f"free of {total_bytes / gib:.1f} GiB)")
    if batch_size > 1:
        advice = (f"Use a smaller batch: halve it to --batch-size {batch_size // 2}, or use fewer/smaller views")
        if workers > 1 or device.startswith("cuda"):
            advice += (f"; to keep the global batch of {batch_size * workers} frames, spread it over more "
                       f"workers (--batch-size is per worker)")
    else:
        advice = "Even one frame does not fit: use fewer/smaller views or a smaller model"
    return (f"out of memory on {device}{memory}: --batch-size {batch_size} (frames per worker per step) with "
            f"--views {views} ({per_frame} views per frame, {batch_size * per_frame} view images, "
            f"{mpix:.1f} M pixels per step) does not fit. {advice}."
            + (f" [{detail}]" if detail else ""))


def _oom_error(config: dict, exc: BaseException) -> BatchDoesNotFitError:
    import ray.train.torch

    cfg = PretrainConfig(**config["pretrain"])
    device = ray.train.torch.get_device()
    figures = {}
    if device.type == "cuda":
        try:
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(device)
            figures = dict(free_bytes=free, total_bytes=total, peak_bytes=torch.cuda.max_memory_allocated(device))
        except Exception:  # the figures are a courtesy; the message must not fail
            pass
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return BatchDoesNotFitError(oom_message(cfg.batch_size, cfg.views, str(device), workers=cfg.workers,
                                            detail=f"torch: {first_line}", **figures))


# ----------------------------------------------------------------------------- the loop

OOM_FILE = "out_of_memory.json"   # in the run's storage: several workers' record of it (see below)


def train_loop_per_worker(config: dict) -> dict | None:
    """Ray Train entry point. config: {"pretrain": asdict(PretrainConfig), "base_path",
    "tracking_uri", "mlflow_run_id", "trial", "storage", ...}.

    Out of memory in the worker (views, forward, backward, optimizer) is deterministic: the same
    batch would run out again on every retry. So it is never handed to Train to retry: it becomes
    a BatchDoesNotFitError message (batch size, views, device, what to change) and the run ends
    "failed" with it. A single worker returns {"status": "failed", "reason": message}: Train sees a
    function that ended, and run_pretrain reads rank 0's return value. Several workers cannot all
    end normally (a rank that did not run out may be waiting in a collective for the one that did),
    so the rank that ran out records the message in the run's storage (OOM_FILE) and raises, which
    tears the group down at once; a group that Train restarts finds the record and ends the same
    way before training, and run_pretrain reads it when no group is left to restart."""
    entered = time.time()
    recorded = _recorded_oom(config)
    if recorded:
        return {"status": "failed", "reason": recorded}
    try:
        probed = _train_loop({**config, "entered": entered})
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        error = _oom_error(config, exc)
        if PretrainConfig(**config["pretrain"]).workers == 1:
            return {"status": "failed", "reason": str(error)}
        _record_oom(config, str(error))
        raise error from None
    return probed


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), or the CPU allocator refusing an allocation (torch raises
    a plain RuntimeError there: "DefaultCPUAllocator: can't allocate memory: ...")."""
    return isinstance(exc, torch.OutOfMemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _recorded_oom(config: dict) -> str:
    path = Path(config["storage"]) / OOM_FILE if config.get("storage") else None
    if path is None or not path.is_file():
        return ""
    return json.loads(path.read_text())["reason"]


def _record_oom(config: dict, reason: str) -> None:
    if not config.get("storage"):
        return
    path = Path(config["storage"]) / OOM_FILE
    tmp = path.with_name(f"{OOM_FILE}.{os.getpid()}.tmp")   # several ranks may write it at once
    tmp.write_text(json.dumps({"reason": reason}))
    os.replace(tmp, path)


def _train_loop(config: dict) -> dict | None:
    """Restore, then step until cfg.steps (or a divergence): log and report every log_every steps,
    checkpoint every checkpoint_every steps and at the end. config["entered"]: when the worker
    entered train_loop_per_worker (time.time()). Returns rank 0's probe of the final backbone
    (config["final_probe"]), when it ran one."""
    run = _WorkerRun(config)
    run.restore()
    run.clock.update({"worker_start": config["entered"], "model_ready": time.time()})
    cfg = run.cfg
    t_wait = time.perf_counter()
    for batch_epoch, batch_index, batch in run.batches():
        if run.step >= cfg.steps:
            break
        run.wait_window += time.perf_counter() - t_wait
        run.clock.setdefault("first_batch", time.time())
        out, grad_norm = run.train_on(batch)
        run.advance(batch_epoch, batch_index)
        log_now = run.step % cfg.log_every == 0 or run.step == cfg.steps
        ckpt_now = run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps
        if log_now or ckpt_now:
            run.log_and_checkpoint(out, grad_norm, ckpt_now)
            if run.status != "running":
                break
        t_wait = time.perf_counter()
    if run.step < cfg.steps and run.status == "running":
        raise RuntimeError(f"the data stream of rank {run.rank} ended at step {run.step} of {cfg.steps}")
    if run.logger:
        run.logger.flush()
    return run.probed


class _WorkerRun:
    """One worker's part of a run: its model, optimizer and data shard, where it is (step, epoch,
    batch in the epoch, the divergence guard: what a checkpoint holds), and where it logs."""

    def __init__(self, config: dict):
        import ray.train
        import ray.train.torch

        self.config = config
        self.cfg = cfg = PretrainConfig(**config["pretrain"])
        self.groups = parse_views(cfg.views)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.on_gpu = self.device.type == "cuda"
        if not self.on_gpu:
            torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))

        backbone, self.head = build_model(cfg, config.get("base_path", ""))
        self.trainable = [p for p in list(backbone.parameters()) + list(self.head.parameters())
                          if p.requires_grad]
        self.backbone_trainable = [p for p in backbone.parameters() if p.requires_grad]
        self.init_params = [p.detach().clone().to(self.device) for p in self.backbone_trainable]
        self.init_norm = _norm(self.init_params).clamp_min(1e-12)  # ||theta_0||: the study's drift yardstick
        self.inner = LeJEPAStep(backbone, self.head)
        model = ray.train.torch.prepare_model(self.inner, parallel_strategy_kwargs={"find_unused_parameters": False})
        self.forward = step_forward(model, self.inner, cfg, self.world)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=(0.9, 0.999), fused=self.on_gpu)

        self.step, self.epoch, self.batch_in_epoch, self.resumed_from = 0, 0, 0, -1
        self.guard = DivergenceGuard(cfg.spike_factor, cfg.spike_patience)
        self.status, self.reason = "running", ""
        self.frames_per_step = cfg.batch_size * self.world
        # throughput since the last report: its start, frames trained, seconds waited for data
        self.t_window, self.frames_window, self.wait_window = 0.0, 0, 0.0
        # Whole-stream mode (several workers, deterministic data): every worker reads the global
        # batch and keeps its rank's slice, so step k trains on the same frames with 1 or N workers.
        self.whole_stream = self.world > 1 and cfg.deterministic_data
        self.iterators_made = 0
        self.logger = self.metrics_sink = None
        # wall-clock moments of this attempt (time.time()), reported as clock/<name>: the trial
        # splits its overhead with them (trial.overhead_times)
        self.clock: dict[str, float] = {}
        self.probed: dict | None = None

    # --- restore
    def restore(self) -> None:
        """Continue from the run's latest checkpoint (a re-run, or Train restarting the group),
        then open the sinks of rank 0: the MLflow step logger and the Prometheus metrics."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as d:
                state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            self.inner.load_state_dict(state["model"], strict=False)
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            self.resumed_from = self.step
            self.guard.load(json.loads(state["guard"]))
            torch.set_rng_state(state["rng_cpu"])
            if self.on_gpu and "rng_cuda" in state:
                torch.cuda.set_rng_state(state["rng_cuda"])
        if self.rank == 0 and self.config.get("mlflow_run_id"):
            from sportray.tracking import StepLogger, connect
            self.logger = StepLogger(connect(self.config["tracking_uri"]), self.config["mlflow_run_id"])
        from sportray.metrics import TrainMetrics   # stdlib-only at import; a no-op without Ray
        if self.rank == 0:
            self.metrics_sink = TrainMetrics(trial=self.config.get("trial", ""), arm=self.cfg.arm)

    def save_state(self, directory: str) -> None:
        state = {"model": {k: v for k, v in self.inner.state_dict().items()
                           if k in _trainable_keys(self.inner)},
                 "optimizer": self.optimizer.state_dict(), "step": self.step, "epoch": self.epoch,
                 "batch_in_epoch": self.batch_in_epoch, "guard": json.dumps(self.guard.state()),
                 "rng_cpu": torch.get_rng_state()}
        if self.on_gpu:
            state["rng_cuda"] = torch.cuda.get_rng_state()
        write_state(state, directory)

    def batches(self):
        """(epoch, index in the epoch, batch) from where the restored run stopped."""
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        self.t_window = time.perf_counter()        # the first report's rate counts from here
        read_batch = self.frames_per_step if self.whole_stream else self.cfg.batch_size

        def new_iterator():
            self.iterators_made += 1
            return shard.iter_torch_batches(batch_size=read_batch, dtypes=torch.uint8, device=self.device,
                                            drop_last=True, prefetch_batches=2, pin_memory=self.on_gpu)

        per_epoch = int(self.config.get("batches_per_epoch") or 0)
        if per_epoch:   # run_pretrain made the dataset one stream over every epoch (a store)
            return _stream_batches(new_iterator(), per_epoch, self.epoch, self.batch_in_epoch)
        return _epoch_batches(new_iterator, self.epoch, self.batch_in_epoch, self.rank, self.cfg.batch_size)

    # --- step
    def train_on(self, batch: dict) -> tuple[dict, torch.Tensor]:
        """One optimisation step on this rank's frames of the batch (train_step, shared with bench/)."""
        cfg, offset = self.cfg, self.rank * self.cfg.batch_size
        frames = batch["frame"]
        if self.whole_stream:
            frames = frames[offset:offset + cfg.batch_size]
        return train_step(self.forward, self.optimizer, self.trainable, frames, self.groups, cfg, self.step,
                          offset=offset, total=self.frames_per_step, proj_dim=self.head.proj_dim)

    def advance(self, batch_epoch: int, batch_index: int) -> None:
        self.step += 1
        self.epoch, self.batch_in_epoch = batch_epoch, batch_index + 1
        self.frames_window += self.frames_per_step

    # --- log and checkpoint
    def log_and_checkpoint(self, out: dict, grad_norm: torch.Tensor, ckpt_now: bool) -> None:
        """Diagnostics of this step, the divergence verdict (agreed by every rank), MLflow and
        Prometheus, then a report to Train: with a checkpoint when one is due or the run ends."""
        import ray.train

        last = self._diagnostics(out, grad_norm)
        # Wall time from the last report to this one, after .item() waited for the GPU: the
        # rate a user measures (the previous report's own time included; issue 17).
        now = time.perf_counter()
        last["train/frames_per_s"] = self.frames_window / max(now - self.t_window, 1e-9)
        last["train/data_wait_s"] = self.wait_window / max(1, self.cfg.log_every)
        self._judge(last)
        if self.logger:
            self.logger.log(self.step, last)
        if self.metrics_sink:
            self.metrics_sink.update(self.step, last)
        self.clock["last_step"] = time.time()
        report = {"step": self.step, "epoch": self.epoch, "status": self.status, "reason": self.reason,
                  "spikes": self.guard.spikes, "resumed_from": self.resumed_from,
                  "data_iterators": self.iterators_made, **last,
                  **{f"clock/{k}": v for k, v in self.clock.items()}}
        if ckpt_now or self.status != "running":
            self._checkpoint(report)
        else:
            ray.train.report(report)
        self.t_window, self.frames_window, self.wait_window = now, 0, 0.0

    def _diagnostics(self, out: dict, grad_norm: torch.Tensor) -> dict:
        with torch.no_grad():
            weight_norm = _norm(self.backbone_trainable)
            dist_init = _norm([p.detach() - p0 for p, p0 in zip(self.backbone_trainable, self.init_params)])
            rel = dist_init / self.init_norm
        return {"train/loss": out["loss"].item(), "train/inv": out["inv"].item(),
                "train/sigreg": out["sigreg"].item(), "train/grad_norm": grad_norm.item(),
                "train/weight_norm": weight_norm.item(), "train/rel_dist_init": rel.item(),
                "train/lr": self.optimizer.param_groups[0]["lr"]}

    def _judge(self, last: dict) -> None:
        """diverged when any rank's guard says so (all ranks must stop at the same step), finished
        at the last step."""
        import torch.distributed as dist

        problem = self.guard.update(last["train/loss"], last["train/grad_norm"])
        flag = torch.tensor([1.0 if problem else 0.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self.status, self.reason = "diverged", problem or "another rank diverged"
        elif self.step >= self.cfg.steps:
            self.status = "finished"

    def _checkpoint(self, report: dict) -> None:
        """Rank 0 writes the state (and, when the run ends, the final backbone); every rank reports."""
        if self.logger:
            self.logger.flush()  # curves up to the checkpoint are safe before it counts
        with tempfile.TemporaryDirectory() as d:
            if self.rank == 0:
                self.save_state(d)
                if self.status != "running":
                    save_final_backbone(self.inner.backbone, self.cfg, self.step, self.status,
                                        Path(d) / BACKBONE_DIR, self.config)
            report_checkpoint(report, d if self.rank == 0 else None, self.config.get("storage", ""), self.step)
            if self.rank == 0 and self.status != "running" and self.config.get("final_probe"):
                self.probed = self._probe_final(Path(d) / BACKBONE_DIR)

    def _probe_final(self, backbone_dir: Path) -> dict:
        """Rank 0 probes the final backbone where it trained, once its checkpoint is safe: the
        imports, CUDA context and GPU share are here already, which a probe task would start again
        (BENCHMARKS.md, "Per-trial phases"). A failure is returned, never raised: Train must not train
        the run again for it (the trial falls back to a probe task)."""
        start = time.time()
        target, args = self.config["final_probe"]
        module, name = target.split(":")
        try:
            out = getattr(importlib.import_module(module), name)(*args, str(backbone_dir))
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        return {**out, "clock": {"checkpointed": start, "probe_end": time.time()}}


def _stream_batches(iterator, per_epoch: int, epoch: int, batch_in_epoch: int):
    """(epoch, index in the epoch, batch) from ONE iterator over a stream of whole-batch epochs
    (run_pretrain's read of a store): the reader never restarts at an epoch boundary. The stream
    starts at an epoch start; a resumed run skips the `batch_in_epoch` batches it already trained on."""
    for k, batch in enumerate(iterator):
        if k < batch_in_epoch:
            continue
        yield epoch + k // per_epoch, k % per_epoch, batch


def _epoch_batches(new_iterator, epoch: int, batch_in_epoch: int, rank: int, batch_size: int):
    """(epoch, index in the epoch, batch) for any other dataset: a new iterator per epoch (Ray Data
    restarts its reads at each one); a resumed run skips what it already trained on."""
    while True:
        seen = 0
        for k, batch in enumerate(new_iterator()):
            seen += 1
            if k >= batch_in_epoch:
                yield epoch, k, batch
        if seen == 0:
            raise RuntimeError(f"the dataset shard of rank {rank} yielded no batch of "
                               f"{batch_size} frames: use a smaller --batch-size or more frames")
        epoch, batch_in_epoch = epoch + 1, 0


def _trainable_keys(module: nn.Module) -> set[str]:
    """Checkpoint only what trains (LoRA: the adapter and head, not the frozen 22 M)."""
    return {n for n, p in module.named_parameters() if p.requires_grad} | \
        {n for n, _ in module.named_buffers()}


def save_final_backbone(backbone, cfg: PretrainConfig, step: int, status: str, directory: Path,
                        config: dict) -> None:
    from sportray import backbones

    meta = {"model": cfg.model, "arm": cfg.arm, "base": config.get("base_label", cfg.base),
            "step": step, "status": status, "views": cfg.views, "seed": cfg.seed, "clip": cfg.clip}
    backbones.save_checkpoint(backbone, directory, meta)


# ----------------------------------------------------------------------------- driver side

@dataclass
class PretrainResult:
    status: str            # finished | diverged | failed
    steps: int
    backbone_dir: str      # where the probe stage reads the final backbone
    metrics: dict
    reason: str = ""
    storage: str = ""
    probed: dict = field(default_factory=dict)   # rank 0's final_probe result; {} when none ran


def run_pretrain(cfg: PretrainConfig, dataset, *, storage_path: str, run_name: str,
                 tracking_uri: str = "", mlflow_run_id: str = "", base_path: str = "",
                 base_label: str = "", trial: str = "", in_tune: bool = False,
                 final_probe: tuple[str, tuple] | None = None) -> PretrainResult:
    """Fit one TorchTrainer on `dataset` (a Ray Dataset with a uint8 `frame` column).

    A stable `run_name` under `storage_path` means a re-run (a restored Tune trial) resumes
    from the run's latest checkpoint instead of starting over.

    final_probe: ("module:function", args): rank 0 calls function(*args, backbone_dir) -> dict on
    the final backbone after the last checkpoint, and its return value comes back as
    PretrainResult.probed ({} where the run did not train to its end in this fit, e.g. a resumed
    run that had finished). A name, not the function: the controller and every worker unpickle the
    loop's config before training, and the probe's modules (MLflow, matplotlib) cost ~3.5 s to
    import on 2 cores (sportray.trial vs sportray.pretrain), which only rank 0 needs, after training.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from sportray.data.errors import DataError
    from sportray.data.frames import stream_store

    cfg.validate()
    # A store's read becomes one stream over every epoch the run needs: no reader restart (and
    # no seconds-long stall) at epoch boundaries. Other datasets are iterated once per epoch.
    try:
        streamed = stream_store(dataset, cfg.steps, cfg.batch_size * cfg.workers)
    except DataError as exc:
        return PretrainResult("failed", 0, "", {}, reason=str(exc), storage=str(Path(storage_path) / run_name))
    batches_per_epoch = 0
    if streamed is not None:
        dataset, batches_per_epoch = streamed
    # Train's controller polls its workers every 2 s by default, and a run's end waits for the
    # next poll: ~2.5 s of every trial (measured on 2 cores). Train hands this variable on to
    # its controller; a value the user set wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    use_gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback
        callbacks.append(TuneReportCallback())
    # Train replaces a dataset's execution options with its own; keep the order (a seed is one
    # run) and, for several workers, hand each the whole stream (they slice the global batch).
    # One worker reads the dataset itself: a split would add a coordinator actor (a process).
    ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = cfg.deterministic_data
    whole_stream = cfg.workers > 1 and cfg.deterministic_data
    data_config = ray.train.DataConfig(datasets_to_split=[] if whole_stream or cfg.workers == 1 else "all",
                                       execution_options=ingest)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"pretrain": asdict(cfg), "base_path": base_path,
                           "base_label": base_label or cfg.base, "tracking_uri": tracking_uri,
                           "mlflow_run_id": mlflow_run_id, "trial": trial,
                           "batches_per_epoch": batches_per_epoch, "final_probe": final_probe,
                           "storage": str(Path(storage_path) / run_name)},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        datasets={"train": dataset}, dataset_config=data_config,
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    run_dir = Path(storage_path) / run_name
    (run_dir / OOM_FILE).unlink(missing_ok=True)   # an earlier attempt's: this one tries again
    try:
        result = trainer.fit()
    except Exception as exc:  # a Train failure after max_failures: report it, don't raise into Tune
        reason = _recorded_oom({"storage": str(run_dir)}) or f"{type(exc).__name__}: {exc}"
        return PretrainResult("failed", 0, "", {}, reason=reason, storage=str(run_dir))
    metrics = dict(result.metrics or {})          # those of the latest checkpoint
    ended = result.return_value                   # rank 0's: a failure it ended the run on
    if ended and ended.get("status") == "failed":
        step = int(metrics.get("step", 0))
        kept = f" The run's checkpoints are kept (the latest at step {step})." if result.checkpoint else ""
        reason = ended["reason"] + kept
        return PretrainResult("failed", step, "", {**metrics, "status": "failed", "reason": reason},
                              reason=reason, storage=str(run_dir))
    ckpt = result.checkpoint
    backbone_dir = str(Path(ckpt.path) / BACKBONE_DIR) if ckpt else ""
    return PretrainResult(metrics.get("status", "failed"), int(metrics.get("step", 0)), backbone_dir,
                          metrics, reason=metrics.get("reason", ""), storage=str(run_dir),
                          probed=ended if isinstance(ended, dict) else {})
