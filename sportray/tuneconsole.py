"""Tune's console for a sweep, compact (sportray/console.py says why): a table of every trial
when one ends -- readable name (recipe and seed), status, step/N, LeJEPA loss, the validation
probe metric -- with "k/N done, ~T left", and one progress line a minute in between.

A module of its own because it subclasses ray.tune.Callback (importing Tune takes seconds; a
sweep's --help and Ray's worker set-up hook must not pay for it), and at module level because
Tune pickles the run config, callbacks included, into the sweep's tuner.pkl (--resume)."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from sportray.console import fmt_duration, say


class SweepConsole(Callback):
    def __init__(self, total: int, steps: int, metric: str, every_s: float = 90.0, stream=None):
        self.total, self.steps, self.metric, self.every_s = int(total), int(steps), metric, float(every_s)
        self.stream = stream
        self.rows: dict[str, dict] = {}
        self.t0 = self.last_line = time.monotonic()
        self.durations: list[float] = []

    def __getstate__(self):
        return {**self.__dict__, "stream": None}

    def _out(self):
        return self.stream or sys.stderr

    def _row(self, trial) -> dict:
        return self.rows.setdefault(trial.trial_id, {
            "name": str(trial), "status": "pending", "step": 0, "loss": None, "metric": None,
            "steps": int((trial.config or {}).get("steps", self.steps)), "t0": time.monotonic()})

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"], row["t0"] = "running", time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        if result.get("step") is not None:
            row["step"] = int(result["step"])
        for key in ("train/loss", "final_loss"):
            if result.get(key) is not None:
                row["loss"] = float(result[key])
        if result.get(self.metric) is not None:
            row["metric"] = float(result[self.metric])
        if result.get("status") in ("diverged", "failed"):
            row["status"] = result["status"]

    def _end(self, trial, status: str) -> None:
        row = self._row(trial)
        if row["status"] not in ("diverged", "failed"):
            row["status"] = status
        self.durations.append(time.monotonic() - row["t0"])
        self.print_table()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "error")

    def _done(self) -> int:
        return sum(r["status"] not in ("pending", "running") for r in self.rows.values())

    def left(self) -> str:
        running = [r for r in self.rows.values() if r["status"] == "running"]
        remaining = self.total - self._done()
        if remaining <= 0:
            return ""
        if self.durations:
            per = sum(self.durations) / len(self.durations)
        else:
            rates = [(time.monotonic() - r["t0"]) * r["steps"] / r["step"] for r in running if r["step"] > 0]
            if not rates:
                return ""
            per = max(rates) * 1.3      # its probe comes after training
        waves = -(-remaining // max(1, len(running)))
        return f", ~{fmt_duration(per * waves)} left"

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last_line < self.every_s:
            return
        self.last_line = now
        running = [r for r in self.rows.values() if r["status"] == "running"]
        say(f"trials {self._done()}/{self.total} done{self.left()}, {fmt_duration(now - self.t0)} in"
            + ("" if running else ", waiting for resources"))
        for r in running:
            print(f"  {r['name'][:34]:<34} {'running':<8} {str(r['step']) + '/' + str(r['steps']):>9} "
                  + (f"{r['loss']:>8.4f}" if r["loss"] is not None else f"{'-':>8}"), file=self._out(), flush=True)

    def print_table(self) -> None:
        self.last_line = time.monotonic()
        say(f"trials {self._done()}/{self.total} done{self.left()}, "
            f"{fmt_duration(time.monotonic() - self.t0)} in")
        head = "valid " + self.metric.split("/", 1)[-1]
        lines = [f"  {'trial':<34} {'status':<8} {'step':>9} {'loss':>8} {head:>24}"]
        for r in self.rows.values():
            loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
            val = f"{r['metric']:.4f}" if r["metric"] is not None else "-"
            lines.append(f"  {r['name'][:34]:<34} {r['status']:<8} {str(r['step']) + '/' + str(r['steps']):>9} "
                         f"{loss:>8} {val:>24}")
        print("\n".join(lines), file=self._out(), flush=True)
