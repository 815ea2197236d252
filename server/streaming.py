"""Streaming aggregation: each site's update is folded into a running sum as it arrives.

Holding every reply until the last one is in costs one model copy per site;
the running sum costs one float64 copy of the model (2x its float32 size),
however many sites answer, plus at most three replies (the one being folded,
one waiting and one being pulled).

Arrival order: the sum is kept in float64 and rounded to the model's dtype once,
at the end. Two orders of the same n updates give float64 sums that differ by
at most about n * 2**-53 * sum(w_i |x_i|) / W per coordinate, far below the
float32 step (2**-24 relative) unless the updates cancel out; so the mean of
the same updates may differ between arrival orders by one float32 rounding step
where the float64 value lies on a rounding boundary, and no more
(tests/server/test_streaming.py checks this bound on shuffled orders).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

# Replies are pulled one per request: a pull inflates every reply it returns
# before handing any over, so pulling all ready replies at once would hold all
# of them (one small request per pending site per poll, cheap next to a round).
# PULLERS of them at a time: a reply still uploading holds one puller while the
# other goes on. Each holds a reply until the next is asked for: with the
# caller's last one, at most PULLERS + 1 replies are in memory.
PULLERS = 2
# Pause after a sweep that brought nothing: POLL_SECONDS, doubling while sweeps stay
# empty up to POLL_MAX_SECONDS. Each pull is a database query in the SuperLink: at a
# steady 0.2 s the SuperLink took 30 % of a core while the sites trained (2 cores,
# 3 sites). Doubling keeps short rounds quick and costs a long round at most 2 s.
POLL_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0
# Elements folded per step: bounds the float64 temporary of `weight * array`
# (512 KB) however large the model's largest array (its embedding) is.
FOLD_CHUNK = 1 << 16


class RunningMean:
    """Weighted mean of named arrays, fed one update at a time, in float64."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self.total_weight = 0.0
        self.count = 0

    def fold(self, arrays: Iterable[tuple[str, np.ndarray]], weight: float) -> None:
        """Add `weight * arrays`."""
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"an update's weight must be positive and finite, not {weight}")
        names = set()
        for name, array in arrays:
            total = self._sums.get(name)
            if total is None and self.count == 0:
                self._sums[name] = np.multiply(array, weight, dtype=np.float64)
                self._dtypes[name] = array.dtype
            elif total is None:
                raise ValueError(f"{name} is not in the earlier updates")
            else:
                _add_weighted(total, array, weight)
            names.add(name)
        if names != set(self._sums):
            raise ValueError(f"update lacks {sorted(set(self._sums) - names)[:3]}")
        self.total_weight += weight
        self.count += 1

    def finish(self) -> dict[str, np.ndarray]:
        """The mean in each array's own dtype; consumes the sums (one array at a time)."""
        if not self.count:
            raise ValueError("no update was folded")
        mean = {}
        for name in list(self._sums):
            total = self._sums.pop(name)
            total /= self.total_weight
            mean[name] = total.astype(self._dtypes[name])
            del total
        return mean


def _add_weighted(total: np.ndarray, array: np.ndarray, weight: float) -> None:
    flat_total, flat = total.reshape(-1), array.reshape(-1)
    for start in range(0, flat.size, FOLD_CHUNK):
        stop = start + FOLD_CHUNK
        flat_total[start:stop] += np.multiply(flat[start:stop], weight, dtype=np.float64)


def stream_replies(grid: Grid, messages: Iterable[Message], timeout: float,
                   *, poll: float = POLL_SECONDS, max_poll: float = POLL_MAX_SECONDS,
                   addressed: dict[str, int] | None = None) -> Iterator[Message]:
    """Push `messages`, then yield each reply as it is pulled until all are in or `timeout`.

    Like `Grid.send_and_receive`, a site that does not answer in time is simply
    missing from what is yielded. The deadline holds even for a reply whose upload
    has begun: Flower's grid hands a reply over only once all its arrays are in,
    waiting up to two hours for a slow link, so pulls run on `PULLERS` background
    threads and the round stops waiting at `timeout`; a reply finished after that
    is dropped. A slow upload holds one puller; the other goes on with the rest.
    `addressed`, when given, gets {message id: destination node} of what was pushed.
    """
    messages = list(messages)
    pushed = list(grid.push_messages(messages))
    if addressed is not None:
        addressed.update({mid: m.metadata.dst_node_id
                          for mid, m in zip(pushed, messages, strict=False) if mid})
    pending = deque(mid for mid in pushed if mid)
    del messages  # the instructions carry the global model; the grid has them now
    deadline = time.monotonic() + timeout
    wanted, done = len(pending), threading.Event()
    handed: queue.Queue[Message | Exception] = queue.Queue()
    held = threading.Semaphore(PULLERS)  # replies in memory: being pulled, waiting or folded

    def pull() -> None:
        idle, pause = 0, poll  # pulls in a row that brought nothing; the next pause
        while not done.is_set():
            try:
                mid = pending.popleft()
            except IndexError:
                return  # every reply is pulled or being pulled
            if not held.acquire(timeout=poll):
                pending.appendleft(mid)
                continue
            try:
                replies = list(grid.pull_messages([mid]))
            except Exception as exc:  # noqa: BLE001 - raised in the round, not lost here
                handed.put(exc)
                return
            if replies:
                handed.put(replies[0])  # its hold ends once it has been folded
                idle, pause = 0, poll
                continue
            held.release()
            pending.append(mid)
            idle += 1
            if idle >= len(pending):
                done.wait(pause)
                idle, pause = 0, min(2 * pause, max(poll, max_poll))

    for _ in range(min(PULLERS, wanted)):
        threading.Thread(target=pull, name="fedehr-pull", daemon=True).start()
    try:
        for _ in range(wanted):
            try:
                reply = handed.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if isinstance(reply, Exception):  # the grid failed (the SuperLink gone)
                raise reply
            yield reply
            del reply
            held.release()
    finally:
        done.set()  # pullers stop; one inside a slow pull drops what it gets
