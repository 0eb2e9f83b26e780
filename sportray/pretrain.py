"""LeJEPA pretraining on Ray Train: the per-worker loop, its diagnostics and checkpoints.

One run = one `TorchTrainer.fit()`. Each worker streams uint8 frames from its shard of the
frame store, builds the views on its own device, and steps AdamW on the LeJEPA loss; DDP
(gloo on CPU, NCCL on GPU) averages gradients and SIGReg all-reduces its statistics.

Read top to bottom: build model -> restore -> loop (views, loss, step, diagnostics,
checkpoint) -> final backbone. The driver side (`run_pretrain`) is at the end.
"""
from __future__ import annotations

import errno
import json
import math
import os
import statistics
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
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
        backbone = backbones.add_lora(backbone, r=8)
    head = LeJEPA(backbone.embed_dim, cfg.proj_dim, cfg.sigreg_directions, cfg.lambda_sigreg)
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
        views = make_views(frames, groups, view_generator(cfg.seed, step), offset=offset,
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

def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. config: {"pretrain": asdict(PretrainConfig), "base_path",
    "tracking_uri", "mlflow_run_id", "trial"}.

    Out of device memory anywhere in a step (views, forward, backward, optimizer) becomes a
    BatchDoesNotFitError naming the batch size, views and device, not a raw CUDA trace."""
    try:
        _train_loop(config)
    except torch.OutOfMemoryError as exc:
        raise _oom_error(config, exc) from None


def _train_loop(config: dict) -> None:
    """The loop itself (see train_loop_per_worker)."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg = PretrainConfig(**config["pretrain"])
    groups = parse_views(cfg.views)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    if not on_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))

    backbone, head = build_model(cfg, config.get("base_path", ""))
    trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    backbone_trainable = [p for p in backbone.parameters() if p.requires_grad]
    init_params = [p.detach().clone().to(device) for p in backbone_trainable]
    init_norm = _norm(init_params).clamp_min(1e-12)  # ||theta_0||: the study's drift yardstick
    step_module = LeJEPAStep(backbone, head)
    model = ray.train.torch.prepare_model(step_module, parallel_strategy_kwargs={"find_unused_parameters": False})
    inner = step_module
    forward = step_forward(model, step_module, cfg, world)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.999), fused=on_gpu)

    step, epoch, batch_in_epoch, resumed_from = 0, 0, 0, -1
    guard = DivergenceGuard(cfg.spike_factor, cfg.spike_patience)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        inner.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        resumed_from = step
        guard.load(json.loads(state["guard"]))
        torch.set_rng_state(state["rng_cpu"])
        if on_gpu and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])

    logger = None
    if rank == 0 and config.get("mlflow_run_id"):
        from sportray.tracking import StepLogger, connect
        logger = StepLogger(connect(config["tracking_uri"]), config["mlflow_run_id"])
    from sportray.metrics import TrainMetrics   # stdlib-only at import; a no-op without Ray
    metrics_sink = TrainMetrics(trial=config.get("trial", ""), arm=cfg.arm) if rank == 0 else None

    shard = ray.train.get_dataset_shard("train")
    frames_per_step = cfg.batch_size * world
    status, reason, last = "running", "", {}
    t_window, frames_window, wait_window = time.perf_counter(), 0, 0.0

    def save_state(directory: str) -> None:
        state = {"model": {k: v for k, v in inner.state_dict().items()
                           if k in _trainable_keys(inner)},
                 "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "guard": json.dumps(guard.state()),
                 "rng_cpu": torch.get_rng_state()}
        if on_gpu:
            state["rng_cuda"] = torch.cuda.get_rng_state()
        write_state(state, directory)

    # Whole-stream mode (several workers, deterministic data): every worker reads the global
    # batch and keeps its rank's slice, so step k trains on the same frames with 1 or N workers.
    whole_stream = world > 1 and cfg.deterministic_data
    read_batch = frames_per_step if whole_stream else cfg.batch_size
    iterators_made = 0

    def new_iterator():
        nonlocal iterators_made
        iterators_made += 1
        return shard.iter_torch_batches(batch_size=read_batch, dtypes=torch.uint8, device=device,
                                        drop_last=True, prefetch_batches=2, pin_memory=on_gpu)

    per_epoch = int(config.get("batches_per_epoch") or 0)
    if per_epoch:   # run_pretrain made the dataset one stream over every epoch (a store)
        batches = _stream_batches(new_iterator(), per_epoch, epoch, batch_in_epoch)
    else:
        batches = _epoch_batches(new_iterator, epoch, batch_in_epoch, rank, cfg.batch_size)
    t_wait = time.perf_counter()
    for batch_epoch, batch_index, batch in batches:
        if step >= cfg.steps:
            break
        wait_window += time.perf_counter() - t_wait
        frames = batch["frame"]
        if whole_stream:
            frames = frames[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]
        out, grad_norm = train_step(forward, optimizer, trainable, frames, groups, cfg, step,
                                    offset=rank * cfg.batch_size, total=frames_per_step, proj_dim=head.proj_dim)
        step += 1
        epoch, batch_in_epoch = batch_epoch, batch_index + 1
        frames_window += frames_per_step

        log_now = step % cfg.log_every == 0 or step == cfg.steps
        ckpt_now = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if log_now or ckpt_now:
            with torch.no_grad():
                weight_norm = _norm(backbone_trainable)
                dist_init = _norm([p.detach() - p0 for p, p0 in zip(backbone_trainable, init_params)])
                rel = dist_init / init_norm
            last = {"train/loss": out["loss"].item(), "train/inv": out["inv"].item(),
                    "train/sigreg": out["sigreg"].item(), "train/grad_norm": grad_norm.item(),
                    "train/weight_norm": weight_norm.item(), "train/rel_dist_init": rel.item(),
                    "train/lr": optimizer.param_groups[0]["lr"]}
            # Wall time from the last report to this one, after .item() waited for the GPU: the
            # rate a user measures (the previous report's own time included; issue 17).
            now = time.perf_counter()
            last["train/frames_per_s"] = frames_window / max(now - t_window, 1e-9)
            last["train/data_wait_s"] = wait_window / max(1, cfg.log_every)
            problem = guard.update(last["train/loss"], last["train/grad_norm"])
            flag = torch.tensor([1.0 if problem else 0.0], device=device)
            if world > 1:
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                status, reason = "diverged", problem or "another rank diverged"
            elif step >= cfg.steps:
                status = "finished"
            if logger:
                logger.log(step, last)
            if metrics_sink:
                metrics_sink.update(step, last)
            report = {"step": step, "epoch": epoch, "status": status, "reason": reason,
                      "spikes": guard.spikes, "resumed_from": resumed_from,
                      "data_iterators": iterators_made, **last}
            if ckpt_now or status != "running":
                if logger:
                    logger.flush()  # curves up to the checkpoint are safe before it counts
                with tempfile.TemporaryDirectory() as d:
                    if rank == 0:
                        save_state(d)
                        if status != "running":
                            save_final_backbone(inner.backbone, cfg, step, status,
                                                Path(d) / BACKBONE_DIR, config)
                    report_checkpoint(report, d if rank == 0 else None, config.get("storage", ""), step)
            else:
                ray.train.report(report)
            t_window, frames_window, wait_window = now, 0, 0.0
            if status != "running":
                break
        t_wait = time.perf_counter()
    if step < cfg.steps and status == "running":
        raise RuntimeError(f"the data stream of rank {rank} ended at step {step} of {cfg.steps}")
    if logger:
        logger.flush()


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


def run_pretrain(cfg: PretrainConfig, dataset, *, storage_path: str, run_name: str,
                 tracking_uri: str = "", mlflow_run_id: str = "", base_path: str = "",
                 base_label: str = "", trial: str = "", in_tune: bool = False) -> PretrainResult:
    """Fit one TorchTrainer on `dataset` (a Ray Dataset with a uint8 `frame` column).

    A stable `run_name` under `storage_path` means a re-run (a restored Tune trial) resumes
    from the run's latest checkpoint instead of starting over.
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
    ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = cfg.deterministic_data
    whole_stream = cfg.workers > 1 and cfg.deterministic_data
    data_config = ray.train.DataConfig(datasets_to_split=[] if whole_stream else "all",
                                       execution_options=ingest)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"pretrain": asdict(cfg), "base_path": base_path,
                           "base_label": base_label or cfg.base, "tracking_uri": tracking_uri,
                           "mlflow_run_id": mlflow_run_id, "trial": trial,
                           "batches_per_epoch": batches_per_epoch,
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
    try:
        result = trainer.fit()
    except Exception as exc:  # a Train failure after max_failures: report it, don't raise into Tune
        return PretrainResult("failed", 0, "", {}, reason=f"{type(exc).__name__}: {exc}",
                              storage=str(Path(storage_path) / run_name))
    metrics = dict(result.metrics or {})
    ckpt = result.checkpoint
    backbone_dir = str(Path(ckpt.path) / BACKBONE_DIR) if ckpt else ""
    return PretrainResult(metrics.get("status", "failed"), int(metrics.get("step", 0)), backbone_dir,
                          metrics, reason=metrics.get("reason", ""),
                          storage=str(Path(storage_path) / run_name))
