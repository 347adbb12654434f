"""The health gate of one unit (pure): what it waits for, what it asks (NRestarts, the check,
timers), its verdict and the words of it; and the environment its check runs with."""

from __future__ import annotations

import pytest

from fleetd.reconcile.environment import check_environment, environment_values
from fleetd.reconcile.gates import Gate, Health
from fleetd.reconcile.health import (
    Arm,
    CheckDone,
    Fired,
    HealthGate,
    Observed,
    ReadRestarts,
    RestartsRead,
    RunCheck,
    Seen,
    Timer,
)
from fleetd.unit import parse_unit

NEW, OLD = "b" * 40, "a" * 40
CURL = "curl -fsS http://127.0.0.1:8080/health"
EXIT = "ExecStart=/bin/false (code=exited, status=1/FAILURE)"

PLAIN = Gate("r1", NEW, "", 10.0, 60.0, "")  # systemd's word and NRestarts only
CHECKED = Gate("r1", NEW, "", 10.0, 60.0, CURL)
RESTART = Gate("r1", NEW, "r1", 10.0, 60.0, "")  # a RESTART rollout: its token first

ACTIVE = Seen(NEW, True, "", "active", "running")
RESTARTED = Seen(NEW, True, "r1", "active", "running")


def seen(**fields) -> Observed:
    values = {"hash": NEW, "started": True, "active": "active", "sub": "running", **fields}
    return Observed(Seen(**values))


def feed(gate: Gate, steps) -> tuple[HealthGate, list]:
    """A gate started at 0, fed `(now, event)` steps; the judge and the actions of each step."""
    judge = HealthGate(gate, 0.0)
    out = [judge.start()]
    for now, event in steps:
        out.append(judge.handle(event, now))
    return judge, out


# the steps of an instance that turns active at 1 s and stays so (no check): window asks
OPENED = [(1.0, seen())]  # → ReadRestarts(1), Arm(WINDOW, 10, 2)
QUIET = [*OPENED, (1.0, RestartsRead(1, 0)), (11.0, Fired(Timer.WINDOW, 2))]  # → ReadRestarts(3)


@pytest.mark.parametrize(
    ("gate", "steps", "health", "reason", "last"),
    [
        # the gate starts: its deadline is armed, it has seen nothing yet
        pytest.param(PLAIN, [], Health.CHECKING, "not judged yet",
                     [Arm(Timer.DEADLINE, 60.0, 0)], id="start"),
        # the machine still runs the previous version (pending → updating, not written yet)
        pytest.param(PLAIN, [(1.0, seen(hash=OLD))], Health.CHECKING,
                     f"still runs another version ({OLD[:7]}, not {NEW[:7]})", [], id="old-version"),
        # a unit moved here by a drain, not written yet
        pytest.param(PLAIN, [(1.0, Observed(Seen()))], Health.CHECKING,
                     "not on this machine yet", [], id="not-here"),
        # written, not started yet: a stale "active" of before does not count
        pytest.param(PLAIN, [(1.0, seen(started=False))], Health.CHECKING, "not started yet", [],
                     id="not-started"),
        # a RESTART rollout waits for its restart token before judging
        pytest.param(RESTART, [(1.0, seen())], Health.CHECKING, "waiting for its restart", [],
                     id="restart-not-done"),
        # between two automatic restarts: not active, nothing armed
        pytest.param(PLAIN, [(1.0, seen(active="activating", sub="auto-restart"))], Health.CHECKING,
                     "not active: activating/auto-restart", [], id="activating"),
        # active: NRestarts read, the minimum healthy time armed
        pytest.param(PLAIN, OPENED, Health.CHECKING, "active, to stay healthy for 10s",
                     [ReadRestarts(1), Arm(Timer.WINDOW, 10.0, 2)], id="window-opens"),
        # with a check: it runs at once too (to tell early what is wrong)
        pytest.param(CHECKED, OPENED, Health.CHECKING, "active, to stay healthy for 10s",
                     [ReadRestarts(1), RunCheck(2, CURL), Arm(Timer.WINDOW, 10.0, 3)],
                     id="window-opens-with-check"),
        # the restart done: judged
        pytest.param(RESTART, [(1.0, seen(restarted="r1"))], Health.CHECKING,
                     "active, to stay healthy for 10s",
                     [ReadRestarts(1), Arm(Timer.WINDOW, 10.0, 2)], id="restart-done"),
        # the window ends: NRestarts read again
        pytest.param(PLAIN, QUIET, Health.CHECKING, "active, to stay healthy for 10s",
                     [ReadRestarts(3)], id="window-ends"),
        # no restart during the window, no check: healthy
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, 0))], Health.HEALTHY,
                     "active for 10s without a restart", [], id="healthy"),
        # restarted meanwhile (a fast Restart= the signals did not show): a new window
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, 3))], Health.CHECKING,
                     "restarted 3 times during the healthy time", [Arm(Timer.WINDOW, 10.0, 4)],
                     id="restarts-grew"),
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, 1)), (21.0, Fired(Timer.WINDOW, 4)),
                             (21.0, RestartsRead(5, 1))],
                     Health.HEALTHY, "active for 10s without a restart", [],
                     id="restarts-grew-then-quiet"),
        # the unit leaves active during the window: the window's timer no longer counts
        pytest.param(PLAIN, [*OPENED, (1.0, RestartsRead(1, 0)),
                             (5.0, seen(active="activating", sub="auto-restart")),
                             (11.0, Fired(Timer.WINDOW, 2))],
                     Health.CHECKING, "not active: activating/auto-restart", [],
                     id="window-closed"),
        # ... and active again: a new window, with a fresh NRestarts
        pytest.param(PLAIN, [*OPENED, (5.0, seen(active="activating", sub="auto-restart")),
                             (6.0, seen()), (6.0, RestartsRead(1, 0))],
                     Health.CHECKING, "active, to stay healthy for 10s", [], id="stale-read"),
        # systemd gives up: unhealthy at once, in its words
        pytest.param(PLAIN, [*OPENED, (3.0, seen(active="failed", sub="failed",
                                                  result="exit-code", exit=EXIT))],
                     Health.UNHEALTHY, f"failed (Result=exit-code): {EXIT}", [], id="failed"),
        pytest.param(PLAIN, [(1.0, seen(active="failed", sub="failed", result="start-limit-hit"))],
                     Health.UNHEALTHY, "failed (Result=start-limit-hit)", [],
                     id="failed-before-active"),
        # a failure of the version before does not count (it is replaced first)
        pytest.param(PLAIN, [(1.0, seen(hash=OLD, active="failed", sub="failed"))],
                     Health.CHECKING, f"still runs another version ({OLD[:7]}, not {NEW[:7]})",
                     [], id="old-failure"),
        # nor a failure from before the restart asked
        pytest.param(RESTART, [(1.0, seen(active="failed", sub="failed"))], Health.CHECKING,
                     "waiting for its restart", [], id="failure-before-restart"),
        # a verdict is final
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, 0)),
                             (12.0, seen(active="failed", sub="failed"))],
                     Health.HEALTHY, "active for 10s without a restart", [], id="final"),
    ],
)  # fmt: skip
def test_judging_with_systemd(gate, steps, health, reason, last) -> None:
    judge, actions = feed(gate, steps)
    assert (judge.health, judge.reason) == (health, reason)
    assert actions[-1] == last


# a checked instance, active at 1 s: ReadRestarts(1), RunCheck(2), Arm(WINDOW, 10, 3)
C_OPENED = [(1.0, seen()), (1.0, RestartsRead(1, 0))]
C_ENDED = [*C_OPENED, (11.0, Fired(Timer.WINDOW, 3)), (11.0, RestartsRead(4, 0))]  # RunCheck(5)
REFUSED = "  % Total    % Received\ncurl: (7) Failed to connect to 127.0.0.1 port 8080: Connection refused\n\n"  # the last line says it
CURL_7 = f"health check `{CURL}` exited 7: curl: (7) Failed to connect to 127.0.0.1 port 8080: Connection refused"


@pytest.mark.parametrize(
    ("steps", "health", "reason", "last"),
    [
        # the first check of the window fails: said at once, the window goes on
        pytest.param([*C_OPENED, (2.0, CheckDone(2, 7, REFUSED))], Health.CHECKING, CURL_7, [],
                     id="early-failure-said"),
        # what was wrong stays said until a check passes; the window ends: NRestarts first
        pytest.param([*C_OPENED, (2.0, CheckDone(2, 7, REFUSED)), (11.0, Fired(Timer.WINDOW, 3))],
                     Health.CHECKING, CURL_7, [ReadRestarts(4)], id="window-ends-checked"),
        # the window ended quietly: the check decides
        pytest.param(C_ENDED, Health.CHECKING, "active, to stay healthy for 10s",
                     [RunCheck(5, CURL)], id="check-decides"),
        pytest.param([*C_ENDED, (11.5, CheckDone(5, 0))], Health.HEALTHY,
                     f"active for 10s without a restart, health check `{CURL}` passed", [],
                     id="check-passes"),
        # it fails: tried again after 1 s (a timer), NRestarts first
        pytest.param([*C_ENDED, (11.5, CheckDone(5, 7, REFUSED))], Health.CHECKING, CURL_7,
                     [Arm(Timer.RETRY, 1.0, 6)], id="check-fails"),
        pytest.param([*C_ENDED, (11.5, CheckDone(5, 7, REFUSED)), (12.5, Fired(Timer.RETRY, 6))],
                     Health.CHECKING, CURL_7, [ReadRestarts(7)], id="retry-reads-restarts"),
        pytest.param([*C_ENDED, (11.5, CheckDone(5, 7, REFUSED)), (12.5, Fired(Timer.RETRY, 6)),
                      (12.5, RestartsRead(7, 0)), (13.0, CheckDone(8, 22, ""))],
                     Health.CHECKING, f"health check `{CURL}` exited 22",
                     [Arm(Timer.RETRY, 2.0, 9)], id="backoff-doubles"),
        # a check that ran too long, or was killed
        pytest.param([*C_ENDED, (21.5, CheckDone(5, None, error="timed out after 10s"))],
                     Health.CHECKING, f"health check `{CURL}` timed out after 10s",
                     [Arm(Timer.RETRY, 1.0, 6)], id="check-timed-out"),
        pytest.param([*C_ENDED, (11.5, CheckDone(5, -9, ""))], Health.CHECKING,
                     f"health check `{CURL}` was killed by signal 9", [Arm(Timer.RETRY, 1.0, 6)],
                     id="check-killed"),
        # the deadline: unhealthy with what was wrong last
        pytest.param([*C_ENDED, (11.5, CheckDone(5, 7, REFUSED)), (60.0, Fired(Timer.DEADLINE, 0))],
                     Health.UNHEALTHY, f"not healthy within 60s: {CURL_7}", [],
                     id="deadline-check"),
        # a step that comes after the deadline (a late loop) is judged by the clock too
        pytest.param([*C_ENDED, (61.0, CheckDone(5, 0))], Health.UNHEALTHY,
                     "not healthy within 60s: active for less than the minimum healthy time (10s)",
                     [], id="deadline-by-clock"),
    ],
)  # fmt: skip
def test_judging_with_a_check(steps, health, reason, last) -> None:
    judge, actions = feed(CHECKED, steps)
    assert (judge.health, judge.reason) == (health, reason)
    assert actions[-1] == last


@pytest.mark.parametrize(
    ("gate", "steps", "reason"),
    [
        pytest.param(PLAIN, [(1.0, seen(active="activating", sub="auto-restart"))],
                     "not healthy within 60s: not active: activating/auto-restart",
                     id="never-active"),
        pytest.param(PLAIN, [(1.0, seen(hash=OLD))],
                     f"not healthy within 60s: still runs another version ({OLD[:7]}, not {NEW[:7]})",
                     id="never-updated"),
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, 3))],
                     "not healthy within 60s: restarted 3 times during the healthy time",
                     id="kept-restarting"),
        pytest.param(PLAIN, [*QUIET, (11.0, RestartsRead(3, None, "bus lost"))],
                     "not healthy within 60s: could not read NRestarts: bus lost",
                     id="nrestarts-unreadable"),
        pytest.param(RESTART, [(1.0, seen())], "not healthy within 60s: waiting for its restart",
                     id="never-restarted"),
    ],
)  # fmt: skip
def test_deadline_says_what_was_wrong_last(gate, steps, reason) -> None:
    judge, _ = feed(gate, [*steps, (60.0, Fired(Timer.DEADLINE, 0))])
    assert (judge.health, judge.reason) == (Health.UNHEALTHY, reason)


def test_backoff_is_capped_at_ten_seconds() -> None:
    judge, _ = feed(CHECKED, C_ENDED)
    delays, ask, now = [], 5, 11.0
    for _ in range(6):  # fail, retry (NRestarts, check), fail, ...
        (arm,) = judge.handle(CheckDone(ask, 1, "no"), now)
        delays.append(arm.delay)
        now += arm.delay
        (read,) = judge.handle(Fired(Timer.RETRY, arm.ask), now)
        (check,) = judge.handle(RestartsRead(read.ask, 0), now)
        ask = check.ask
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_stale_answers_and_timers_change_nothing() -> None:
    """Answers of a closed window (a read, a check, its timer) never count in the next one."""
    judge, _ = feed(CHECKED, [*C_OPENED, (3.0, seen(active="deactivating", sub="stop")),
                              (4.0, seen())])  # fmt: skip
    # window 2 asks: ReadRestarts(4), RunCheck(5), Arm(WINDOW, 10, 6)
    assert judge.handle(CheckDone(2, 7, REFUSED), 4.5) == []
    assert judge.reason == "active, to stay healthy for 10s"
    assert judge.handle(Fired(Timer.WINDOW, 3), 11.0) == []
    assert judge.handle(Fired(Timer.WINDOW, 6), 14.0) == [ReadRestarts(7)]


def test_a_settled_gate_asks_nothing() -> None:
    judge = HealthGate.settled(PLAIN, 0.0, Health.HEALTHY, "active for 10s without a restart")
    assert judge.done and judge.start() == []
    assert judge.handle(seen(active="failed"), 1.0) == []
    assert (judge.health, judge.reason) == (Health.HEALTHY, "active for 10s without a restart")


# ---- the check's environment


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["PORT=8080"], {"PORT": "8080"}, id="one"),
        pytest.param(["A=1 B=2", "C=3"], {"A": "1", "B": "2", "C": "3"}, id="words-and-lines"),
        pytest.param(['"GREETING=hello world" X=1'], {"GREETING": "hello world", "X": "1"},
                     id="quoted-word"),
        pytest.param(["GREETING='hello world'"], {"GREETING": "hello world"}, id="quoted-value"),
        pytest.param([r'MSG=a\tb "Q=say \"hi\""'], {"MSG": "a\tb", "Q": 'say "hi"'},
                     id="escapes"),
        pytest.param(["A=1", "A=2"], {"A": "2"}, id="last-wins"),
        pytest.param(["A=1", "", "B=2"], {"B": "2"}, id="empty-resets"),
        pytest.param(["novalue 1X=2 OK=yes"], {"OK": "yes"}, id="not-assignments-ignored"),
        pytest.param(["EMPTY="], {"EMPTY": ""}, id="empty-value"),
    ],
)  # fmt: skip
def test_environment_values_as_systemd_splits_them(values, expected) -> None:
    assert environment_values(values) == expected


def test_check_environment_expands_specifiers_and_names_the_unit() -> None:
    unit = parse_unit(
        "[Service]\nEnvironment=PORT=80%i NAME=%n PCT=100%%\nExecStart=/bin/true\n"
        "[X-Fleet]\nEnvironment=IGNORED=1\n"
    )
    assert check_environment(unit, "web@42.service", "m1") == {
        "PORT": "8042",
        "NAME": "web@42.service",
        "PCT": "100%",
        "FLEET_UNIT": "web@42.service",
        "FLEET_MACHINE_ID": "m1",
    }
    assert check_environment(None, "x.service", "m1") == {
        "FLEET_UNIT": "x.service",
        "FLEET_MACHINE_ID": "m1",
    }
