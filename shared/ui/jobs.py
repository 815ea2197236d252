"""Sampling runs in a background thread so the page can show progress and cancel.

The clinical code reports progress through a callback (continuations done);
cancelling makes the next callback raise `Cancelled`, which stops the run at
the end of the current batch of continuations.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedehr.shared.errors import FedEHRError


class Cancelled(Exception):
    """The user pressed Cancel."""


@dataclass
class Job:
    kind: str  # "patient" or "cohort"
    title: str
    total: int  # continuations expected (an estimate: a wider budget may resample)
    context: dict = field(default_factory=dict)  # what the result page shows besides
    id: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    result: Any = None
    error: str = ""
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, n: int) -> None:
        if self._cancel.is_set():
            raise Cancelled
        self.done += n

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def status(self) -> dict:
        # predict_detailed samples the undecided continuations again with a longer token
        # budget when the model's clock runs slow: past the estimate, the bar shows a
        # second pass (it ends early, when only a few are redone) rather than a full bar
        passes = max(1, -(-self.done // max(self.total, 1)))
        if self.state == "running" and self.done == passes * self.total:
            passes += 1
        total = self.done if self.finished else passes * self.total
        return {"state": self.state, "done": self.done, "total": total,
                "seconds": round(self.seconds or time.perf_counter() - self.started, 1)}


class Jobs:
    """The jobs of this server process, newest kept; one runs at a time (`lock`)."""

    def __init__(self, lock: threading.Lock, keep: int = 50):
        self.lock = lock
        self.keep = keep
        self._jobs: dict[str, Job] = {}

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def start(self, job: Job, work: Callable[[Callable[[int], None]], Any]) -> Job:
        self._jobs[job.id] = job
        for old in list(self._jobs)[:-self.keep]:
            self._jobs.pop(old)
        threading.Thread(target=self._run, args=(job, work), daemon=True,
                         name=f"fedehr-ui-{job.id}").start()
        return job

    def _run(self, job: Job, work) -> None:
        with self.lock:
            if job._cancel.is_set():
                job.state = "cancelled"
                return
            job.state = "running"
            job.started = time.perf_counter()
            try:
                job.result = work(job.progress)
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except FedEHRError as exc:  # the user's to fix: shown on the page
                job.error, job.state = exc.one_line(), "failed"
            except Exception as exc:  # noqa: BLE001  a page, not a traceback
                job.error = f"the run failed ({type(exc).__name__}: {exc}); see the server log"
                job.state = "failed"
                import logging

                logging.getLogger("fedehr.ui").exception("job %s failed", job.id)
            finally:
                job.seconds = time.perf_counter() - job.started
