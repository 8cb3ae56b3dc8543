"""Progress on stderr: bars on a terminal, plain timestamped lines otherwise, nothing with -q."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click

from scmopt.cli.common import num
from scmopt.runtime import work

HEARTBEAT_S = 10.0  # without a terminal, a line at least this often (module-level: tests)


class Progress:
    """Fed by the search's progress(stage, done, total) callback and its optional
    record(trajectory row). On a terminal: one bar per stage. Otherwise: a line per round and
    measured plan, at stage changes, and at least every HEARTBEAT_S (stage and round, units
    kept, measured risk and fidelity, elapsed), so CI logs never go silent."""

    def __init__(self, quiet: bool, lines: bool | None = None) -> None:
        lines = not sys.stderr.isatty() if lines is None else lines
        self.lines, self.bars = not quiet and lines, not quiet and not lines
        self.t0 = self.last = time.perf_counter()
        self.stage: str | None = None
        self.state = {"round": "", "stage": "", "plan": ""}
        self.bar: Any = None
        self.pending: list[str] = []  # lines shown at the first event (once work has started)
        self.done = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.beat = threading.Thread(target=self._beat, daemon=True) if self.lines else None
        if self.beat is not None:
            self.beat.start()

    def __call__(self, stage: str, done: int, total: int) -> None:
        self._flush()
        if self.bars:
            self._bar(stage, done, total)
        elif self.lines:
            with self.lock:
                if stage == "round":
                    self.state.update(round=f"round {done}/{total}", stage="")
                    self._line(self._now())
                else:
                    self.state["stage"] = f"{stage} {done}/{total}"
                    if stage != self.stage and time.perf_counter() - self.last >= 2.0:
                        self._line(self._now())
                self.stage = stage

    def record(self, row: dict) -> None:
        """A trajectory row of the search: a candidate plan and its measured numbers."""
        what = "refit" if row.get("refit") else f"round {row.get('round')}"
        got = (f"{row.get('kept')} units kept, risk {num(row.get('risk'))}, "
               f"fidelity {num(row.get('fidelity'))}")  # fmt: skip
        if row.get("accepted"):
            self.state["plan"] = got
        self.note(f"{what}: {got} ({'accepted' if row.get('accepted') else 'rejected'})", False)

    def note(self, text: str, bars: bool = True, stage: bool = False) -> None:
        """A line of its own (on a terminal too when `bars`); `stage`: `text` names the stage
        that runs now (the heartbeat lines repeat it)."""
        self._flush()
        if self.bars and bars:
            self._close_bar()
            click.echo(f"scmopt: {text}", err=True)
        elif self.lines:
            with self.lock:
                if stage:
                    self.state.update(round="", stage=text)
                self._line(text)

    def _flush(self) -> None:
        while self.pending and (self.bars or self.lines):
            click.echo(f"scmopt: {self.pending.pop(0)}", err=True)

    def close(self) -> None:
        """Stops the heartbeat and closes the bar (idempotent)."""
        self.stop.set()
        if self.beat is not None and self.beat is not threading.current_thread():
            self.beat.join()
        self._close_bar()

    def _now(self) -> str:
        return ", ".join(v for v in self.state.values() if v) or "starting"

    def _line(self, text: str) -> None:
        self.last = time.perf_counter()
        ledger = work.active()
        fpe = f"{ledger.total:7.1f} FPE  " if ledger is not None and ledger.samples else ""
        click.echo(f"scmopt: {self.last - self.t0:7.1f} s  {fpe}{text}", err=True)

    def _beat(self) -> None:
        while True:
            with self.lock:
                wait = self.last + HEARTBEAT_S - time.perf_counter()
                if wait <= 0:
                    self._line(self._now())
                    wait = HEARTBEAT_S
            if self.stop.wait(wait):
                return

    def _bar(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self._close_bar()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=f"{stage:<18}",
                                         file=sys.stderr)  # fmt: skip
            self.bar.__enter__()
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.stage = None, None
