"""The health gate of one unit on this machine: is it healthy for the rollout (or drain) that
judges it? Pure: the agent's gate shell (`fleetd/gates.py`) hands in what happens — the unit's
state as the agent knows it, `NRestarts` readings, health check results, timers that fired,
the clock — and does what comes back (read `NRestarts`, run the check, arm a timer).

How a unit is judged (`Gate`, from `reconcile/gates.py`):
- the gate starts when the agent first sees it; it is unhealthy if not healthy by
  `start + Gate.deadline`, with what was wrong last;
- it waits until the unit runs the content judged (`Gate.hash`, started by the agent) and has
  done the restart asked (`Gate.restart`, a RESTART rollout), and until systemd says `active`;
- once active, the healthy window opens: `NRestarts` is read, the check (`UpdateHealthCheck=`,
  if any) runs to tell early what is wrong, and a timer of `Gate.min_healthy` is armed. The unit
  leaving `active` closes the window (it waits for `active` again);
- when the window ends: `NRestarts` grown → a new window; else the check (if any) decides: exit
  0 is healthy, a failure is tried again after 1 s, doubling up to 10 s (a retry timer, not a
  poll), each time with `NRestarts` read again first;
- systemd gives up on the unit (`failed`): unhealthy at once, in systemd's words.
A verdict, healthy or unhealthy, is final for the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from fleetd.reconcile.gates import Gate, Health

__all__ = [
    "RETRY_CAP",
    "RETRY_FIRST",
    "Arm",
    "CheckDone",
    "Fired",
    "HealthGate",
    "Observed",
    "ReadRestarts",
    "RestartsRead",
    "RunCheck",
    "Seen",
    "Timer",
    "check_failure",
    "systemd_failure",
]

RETRY_FIRST, RETRY_CAP = 1.0, 10.0  # seconds between checks after a failed one


class Timer(StrEnum):
    WINDOW = "window"  # the minimum healthy time has passed since the unit turned active
    RETRY = "retry"  # try the check (and NRestarts) again after a failure
    DEADLINE = "deadline"  # the gate's deadline


# ---- what happens (inputs)


@dataclass(frozen=True, slots=True)
class Seen:
    """The unit as the agent knows it: the content of its file, whether the agent started that
    content, the last restart token done here, and systemd's word."""

    hash: str = ""  # "" when the unit is not on this machine (yet)
    started: bool = False
    restarted: str = ""
    active: str = "inactive"
    sub: str = "dead"
    result: str = ""  # why it failed, when it did (systemd's Result=)
    exit: str = ""  # the process that failed, as systemctl status shows it


@dataclass(frozen=True, slots=True)
class Observed:
    seen: Seen


@dataclass(frozen=True, slots=True)
class RestartsRead:
    """The answer to `ReadRestarts(ask)`: NRestarts, or None and why it could not be read."""

    ask: int
    count: int | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class CheckDone:
    """The end of `RunCheck(ask)`: its exit status (negative: killed by that signal) and its
    output, or None and why it did not finish (`error`: "timed out after 10s", ...)."""

    ask: int
    status: int | None
    output: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Fired:
    timer: Timer
    ask: int


Event = Observed | RestartsRead | CheckDone | Fired


# ---- what to do (outputs)


@dataclass(frozen=True, slots=True)
class ReadRestarts:
    ask: int


@dataclass(frozen=True, slots=True)
class RunCheck:
    ask: int
    command: str


@dataclass(frozen=True, slots=True)
class Arm:
    """Arm `timer` to fire in `delay` seconds (replacing the one of that kind armed before)."""

    timer: Timer
    delay: float
    ask: int


Action = ReadRestarts | RunCheck | Arm


class _Stage(Enum):
    WAITING = "waiting"  # for the content, its restart, or ActiveState=active
    WINDOW = "window"  # active: the minimum healthy time runs
    CONFIRMING = "confirming"  # the window ended: NRestarts is read again
    CHECKING = "checking"  # no restart meanwhile: the check decides
    BACKOFF = "backoff"  # the check failed (or NRestarts could not be read): retry later
    DONE = "done"


class HealthGate:
    """The judgement of one unit for one gate. Feed it with `handle(event, now)` (`now`: the
    shell's clock in seconds, the same clock `Arm` delays are counted on); it returns what to
    do, and `health`/`reason` say the verdict so far."""

    def __init__(self, gate: Gate, now: float) -> None:
        self.gate = gate
        self.deadline_at = now + gate.deadline
        self.health = Health.CHECKING
        self._stage = _Stage.WAITING
        self._waiting = "not judged yet"  # what it waits for (WAITING)
        self._problem = ""  # what was wrong last during a window
        self._check_problem = False  # _problem comes from the check
        self._final = ""  # the reason of the verdict
        self._asked = 0
        self._window = 0  # the first ask of the current window: older answers are stale
        self._read = self._check = self._timer = -1  # the asks whose answers are awaited
        self._n0: int | None = None  # NRestarts when the window opened
        self._retry = RETRY_FIRST

    @classmethod
    def settled(cls, gate: Gate, now: float, health: str, reason: str) -> HealthGate:
        """A gate whose verdict was given before (by this machine's previous fleetd)."""
        judged = cls(gate, now)
        judged.health, judged._final, judged._stage = health, reason, _Stage.DONE
        return judged

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    @property
    def reason(self) -> str:
        """Why the verdict is what it is, or what the gate waits for, in a user's words."""
        if self._stage is _Stage.DONE:
            return self._final
        if self._stage is _Stage.WAITING:
            return self._waiting
        return self._problem or self._in_window

    @property
    def _in_window(self) -> str:
        return f"active, to stay healthy for {self.gate.min_healthy:g}s"

    def start(self) -> list[Action]:
        """The gate begins: its deadline timer."""
        if self.done:
            return []
        return [Arm(Timer.DEADLINE, self.gate.deadline, 0)]

    def handle(self, event: Event, now: float) -> list[Action]:
        if self._stage is _Stage.DONE:
            return []
        if now >= self.deadline_at or (isinstance(event, Fired) and event.timer is Timer.DEADLINE):
            return self._judged(Health.UNHEALTHY, self._late())
        match event:
            case Observed(seen=seen):
                return self._observed(seen)
            case RestartsRead(ask=ask) if ask == self._read:
                self._read = -1
                return self._restarts_read(event)
            case CheckDone(ask=ask) if ask == self._check:
                self._check = -1
                return self._check_done(event)
            case CheckDone(ask=ask) if ask >= self._window and self._stage is not _Stage.WAITING:
                self._note_check(event)  # the window's first check: it tells what is wrong
            case Fired(timer=Timer.WINDOW | Timer.RETRY, ask=ask) if ask == self._timer:
                self._timer = -1
                self._stage = _Stage.CONFIRMING
                return [self._read_restarts()]
        return []  # a stale answer (of a window closed since) or a timer armed before

    # ---- the steps

    def _observed(self, seen: Seen) -> list[Action]:
        waiting = self._waits_for(seen)
        if waiting is None and seen.active == "failed":
            return self._judged(Health.UNHEALTHY, systemd_failure(seen))
        if waiting is None and seen.active != "active":
            waiting = f"not active: {seen.active}/{seen.sub}"
        if waiting is not None:
            self._close_window(waiting)
            return []
        if self._stage is not _Stage.WAITING:
            return []  # active, judged already
        return self._open_window()

    def _waits_for(self, seen: Seen) -> str | None:
        gate = self.gate
        if not seen.hash:
            return "not on this machine yet"
        if seen.hash != gate.hash:
            return f"still runs another version ({seen.hash[:7]}, not {gate.hash[:7]})"
        if not seen.started:
            return "not started yet"
        if gate.restart and seen.restarted != gate.restart:
            return "waiting for its restart"
        return None

    def _open_window(self, count: int | None = None) -> list[Action]:
        """The unit is active: the minimum healthy time starts (with NRestarts `count` when
        known already, else read now), and the check runs to tell early what is wrong."""
        self._stage = _Stage.WINDOW
        self._window = self._asked + 1
        self._retry = RETRY_FIRST
        actions: list[Action] = []
        self._n0 = count
        if count is None:
            actions.append(self._read_restarts())
        if self.gate.check:
            actions.append(RunCheck(self._ask(), self.gate.check))
        self._timer = self._ask()
        actions.append(Arm(Timer.WINDOW, self.gate.min_healthy, self._timer))
        return actions

    def _close_window(self, waiting: str) -> None:
        self._stage = _Stage.WAITING
        self._waiting = waiting
        self._read = self._check = self._timer = -1  # answers and timers of the window: stale
        self._window = self._asked + 1
        self._problem, self._check_problem = "", False

    def _restarts_read(self, read: RestartsRead) -> list[Action]:
        if self._stage is _Stage.WINDOW:  # the count when the window opened
            self._n0 = read.count
            if read.count is None:
                self._wrong(f"could not read NRestarts: {read.error}")
            return []
        if self._stage is not _Stage.CONFIRMING:
            return []
        if read.count is None:
            self._wrong(f"could not read NRestarts: {read.error}")
            return self._back_off()
        if self._n0 is None:  # not known at the start: the window cannot tell, start again
            return self._open_window(read.count)
        if read.count > self._n0:
            times = read.count - self._n0
            self._wrong(f"restarted {times} time{'s' if times > 1 else ''} during the healthy time")
            return self._open_window(read.count)
        if not self.gate.check:
            return self._judged(
                Health.HEALTHY, f"active for {self.gate.min_healthy:g}s without a restart"
            )
        self._stage = _Stage.CHECKING
        self._check = self._ask()
        return [RunCheck(self._check, self.gate.check)]

    def _check_done(self, done: CheckDone) -> list[Action]:
        if done.status == 0:
            return self._judged(
                Health.HEALTHY,
                f"active for {self.gate.min_healthy:g}s without a restart, "
                f"health check `{_short(self.gate.check)}` passed",
            )
        self._note_check(done)
        return self._back_off()

    def _note_check(self, done: CheckDone) -> None:
        if done.status == 0:
            if self._check_problem:
                self._problem, self._check_problem = "", False
            return
        self._wrong(check_failure(self.gate.check, done))
        self._check_problem = True

    def _back_off(self) -> list[Action]:
        self._stage = _Stage.BACKOFF
        delay, self._retry = self._retry, min(self._retry * 2, RETRY_CAP)
        self._timer = self._ask()
        return [Arm(Timer.RETRY, delay, self._timer)]

    def _wrong(self, problem: str) -> None:
        self._problem, self._check_problem = problem, False

    def _late(self) -> str:
        wrong = self._waiting if self._stage is _Stage.WAITING else self._problem
        if not wrong:
            wrong = f"active for less than the minimum healthy time ({self.gate.min_healthy:g}s)"
        return f"not healthy within {self.gate.deadline:g}s: {wrong}"

    def _judged(self, health: str, reason: str) -> list[Action]:
        self.health, self._final, self._stage = health, reason, _Stage.DONE
        return []

    def _read_restarts(self) -> ReadRestarts:
        self._read = self._ask()
        return ReadRestarts(self._read)

    def _ask(self) -> int:
        self._asked += 1
        return self._asked


# ---- words


def systemd_failure(seen: Seen) -> str:
    """systemd gave up on the unit: why, in its words."""
    result = f" (Result={seen.result})" if seen.result else ""
    process = f": {seen.exit}" if seen.exit else ""
    return f"failed{result}{process}"


def check_failure(command: str, done: CheckDone) -> str:
    """What a failed health check says: its exit and the last line of its output (where
    programs put the error: a traceback's last line, curl's message)."""
    check = f"health check `{_short(command)}`"
    if done.status is None:
        return f"{check} {done.error}"
    if done.status < 0:
        what = f"{check} was killed by signal {-done.status}"
    else:
        what = f"{check} exited {done.status}"
    line = next((line.strip() for line in reversed(done.output.splitlines()) if line.strip()), "")
    return f"{what}: {_short(line, 200)}" if line else what


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
