"""Progress lines with an ETA for long work (generation, patch training, SNIP, the validation sweep): a real model's
steps take minutes where the organism's take a second, so a line comes at most every 30 s and never for work that
ends sooner. A ground-floor module with no imports of the project: every stage can log progress without naming
more code in its lineage."""

from __future__ import annotations

import time


class Progress:
    """`done/total` lines with the rate and an ETA, at most one per `every` seconds (none for work that ends sooner):
    a real model's evaluation of ~1,000 prompts takes minutes, the organism's a second."""

    def __init__(self, what: str, total: int, log=print, every: float = 30.0, clock=time.monotonic):
        self.what, self.total, self.log, self.every, self.clock = what, total, log, every, clock
        self.t0 = self.last = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if now - self.last < self.every or done >= self.total or done <= 0:
            return
        self.last = now
        spent = now - self.t0
        eta = spent / done * (self.total - done)
        self.log(f"{self.what}: {done}/{self.total} ({100 * done / self.total:.0f}%), {_dur(spent)} so far, "
                 f"ETA {_dur(eta)}")


def _dur(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
