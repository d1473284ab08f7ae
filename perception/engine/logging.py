"""Training logs: a CSV file of scalars and a one-line progress bar with loss and ETA."""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Mapping, TextIO


class CSVLog:
    """Append rows of scalars to ``path``; the columns are fixed by the first row written.

    On resume, rows beyond the resumed iteration (written after the last checkpoint by the run
    that was interrupted) are dropped first, so the file reads as one uninterrupted run.

    Args:
        path: the CSV file.
        resume_from: iteration the run resumes at, or None for a fresh file.
    """

    def __init__(self, path: str | os.PathLike, resume_from: int | None = None):
        self.path = Path(path)
        self.fields: list[str] | None = None
        if resume_from is None or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        with open(self.path, newline="") as f:
            header = next(csv.reader(f), None)
        self.path.write_text("")
        if header:
            self.fields = header
            kept = [r for r in rows if int(r["iteration"]) <= resume_from]
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header)
                w.writeheader()
                w.writerows(kept)

    def write(self, row: Mapping[str, float | int | str]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """``[  120/1000]  12% loss 3.412 lr 1.9e-04 1.21 s/it ETA 0:17:45``.

    On a terminal the line is redrawn in place every update; otherwise (log files, CI) a line
    is printed every ``every`` iterations, so logs stay readable.

    Args:
        total: the last iteration. start: the iteration the run starts at (resume).
        every: iterations between lines when not on a terminal.
        stream: where to write (stderr by default). enabled: False silences it.
    """

    def __init__(self, total: int, start: int = 0, every: int = 10, stream: TextIO | None = None,
                 enabled: bool = True):
        self.total, self.start, self.every = total, start, max(1, every)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.smoothed: float | None = None

    def update(self, iteration: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        # Exponential smoothing: a single slow step (a checkpoint, a cold cache) should not
        # swing the ETA.
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        done = iteration - self.start
        per_it = (time.perf_counter() - self.t0) / max(1, done)
        eta = per_it * (self.total - iteration)
        width = len(str(self.total))
        line = (f"[{iteration:>{width}}/{self.total}] {100 * iteration / self.total:3.0f}% "
                f"loss {self.smoothed:.3f} lr {lr:.2e} {per_it:.2f} s/it "
                f"ETA {format_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line)
            if iteration >= self.total:
                self.stream.write("\n")
        elif iteration % self.every == 0 or iteration >= self.total:
            self.stream.write(line + "\n")
        self.stream.flush()
