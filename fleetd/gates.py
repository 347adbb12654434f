"""The agent's health gates: the units of this machine a rollout or a drain is judging, each
judged by the pure `reconcile/health.py: HealthGate`. This shell hands it what happens and does
what it asks: timers on the event loop (`call_later`), `NRestarts` read through the systemd
adapter, the health check run as `/bin/sh -c COMMAND` (the unit's `Environment=`, FLEET_UNIT,
FLEET_MACHINE_ID; killed after `CHECK_TIMEOUT`). Every action is logged, with unit and machine.

The verdict of each unit (`Verdict`: the gate's token, health, reason) outlives its gate: when
the rollout moves on the last one stays published, until a new gate replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping

import structlog

from fleetd.errors import FleetdError
from fleetd.reconcile.gates import Gate, Health
from fleetd.reconcile.health import (
    Action,
    Arm,
    CheckDone,
    Event,
    Fired,
    HealthGate,
    Observed,
    ReadRestarts,
    RestartsRead,
    RunCheck,
    Seen,
    Timer,
)
from fleetd.reconcile.publish import Verdict
from fleetd.systemd import SystemdManager

__all__ = ["CHECK_TIMEOUT", "HealthGates"]

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 10.0  # seconds a health check may run before it is killed (and has failed)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_OUTPUT_LIMIT = 4096  # characters of a check's output kept (only its first line is said)


class HealthGates:
    """Judges this machine's gated units; `verdicts` holds the last verdict of each unit."""

    def __init__(
        self,
        systemd: SystemdManager,
        machine_id: str,
        on_verdict: Callable[[], None],
    ) -> None:
        self.systemd = systemd
        self.machine_id = machine_id
        self.verdicts: dict[str, Verdict] = {}
        self._on_verdict = on_verdict  # a verdict changed: publish
        self._judges: dict[str, HealthGate] = {}
        self._env: dict[str, dict[str, str]] = {}  # the check's environment, per unit
        self._timers: dict[tuple[str, Timer], asyncio.TimerHandle] = {}
        self._tasks: dict[asyncio.Task[None], str] = {}  # reads and checks under way → unit

    def keep(self, verdicts: Mapping[str, Verdict]) -> None:
        """The verdicts published before this fleetd started (they stay published; a gate with
        the same token and a final verdict is not judged again)."""
        for name, verdict in verdicts.items():
            self.verdicts.setdefault(name, verdict)

    def follow(
        self,
        gates: Mapping[str, Gate],
        seen: Callable[[str], Seen],
        environment: Callable[[str, Gate], dict[str, str]],
    ) -> None:
        """The gates now (`gates_on`): start the new ones, end the ones gone (their verdict
        stays), and tell every judge what the agent sees of its unit."""
        for name in sorted(self._judges.keys() - gates.keys()):
            self._end(name, "its gate ended")
        for name, gate in sorted(gates.items()):
            judge = self._judges.get(name)
            if judge is not None and judge.gate == gate:
                self.observe(name, seen(name))
                continue
            if judge is not None:
                self._end(name, "a new gate replaced it")
            self._begin(name, gate, environment(name, gate))
            self.observe(name, seen(name))

    def observe(self, name: str, seen: Seen) -> None:
        """The agent's knowledge of a gated unit changed (or may have)."""
        if name in self._judges:
            self._handle(name, self._judges[name], Observed(seen))

    def forget(self, name: str) -> None:
        """The unit left this machine: no gate, no verdict."""
        if name in self._judges:
            self._end(name, "the unit left this machine")
        self.verdicts.pop(name, None)

    def close(self) -> None:
        """Cancel every timer and every check or read under way (the agent stops)."""
        for name in list(self._judges):
            self._end(name, "the agent stopped", quiet=True)

    # ---- one gate

    def _begin(self, name: str, gate: Gate, env: dict[str, str]) -> None:
        now = asyncio.get_running_loop().time()
        kept = self.verdicts.get(name)
        if kept is not None and kept.gate == gate.token and kept.health != Health.CHECKING:
            judge = HealthGate.settled(gate, now, kept.health, kept.reason)
        else:
            judge = HealthGate(gate, now)
        self._judges[name] = judge
        self._env[name] = env
        log.info(
            "agent.gate_started",
            unit=name,
            machine=self.machine_id,
            gate=gate.token,
            hash=gate.hash,
            restart=gate.restart or None,
            min_healthy=gate.min_healthy,
            deadline=gate.deadline,
            check=gate.check or None,
            settled=judge.health if judge.done else None,
        )
        self._act(name, judge, judge.start())  # its verdict is recorded once it has seen the unit

    def _end(self, name: str, why: str, *, quiet: bool = False) -> None:
        judge = self._judges.pop(name)
        self._env.pop(name, None)
        for timer in Timer:
            handle = self._timers.pop((name, timer), None)
            if handle is not None:
                handle.cancel()
        for task, unit in list(self._tasks.items()):
            if unit == name:
                task.cancel()  # a check still running is killed
        if not quiet:
            log.info(
                "agent.gate_ended",
                unit=name,
                machine=self.machine_id,
                gate=judge.gate.token,
                health=judge.health,
                why=why,
            )

    def _handle(self, name: str, judge: HealthGate, event: Event) -> None:
        if self._judges.get(name) is not judge:
            return  # an answer for a gate that ended meanwhile
        self._act(name, judge, judge.handle(event, asyncio.get_running_loop().time()))
        self._record(name, judge)

    def _record(self, name: str, judge: HealthGate) -> None:
        verdict = Verdict(judge.gate.token, judge.health, judge.reason)
        if self.verdicts.get(name) == verdict:
            return
        self.verdicts[name] = verdict
        log.info(
            "agent.gate_verdict",
            unit=name,
            machine=self.machine_id,
            gate=verdict.gate,
            health=verdict.health,
            reason=verdict.reason,
        )
        self._on_verdict()

    def _act(self, name: str, judge: HealthGate, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            match action:
                case Arm(timer=timer, delay=delay, ask=ask):
                    old = self._timers.pop((name, timer), None)
                    if old is not None:
                        old.cancel()
                    self._timers[(name, timer)] = loop.call_later(
                        delay, self._fired, name, judge, Fired(timer, ask)
                    )
                case ReadRestarts(ask=ask):
                    self._spawn(self._read_restarts(name, judge, ask), name)
                case RunCheck(ask=ask, command=command):
                    env = self._env.get(name, {})
                    self._spawn(self._run_check(name, judge, ask, command, env), name)

    def _fired(self, name: str, judge: HealthGate, fired: Fired) -> None:
        if self._timers.get((name, fired.timer)) is not None:
            del self._timers[(name, fired.timer)]
        self._handle(name, judge, fired)

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro, name=f"gate-{name}")
        self._tasks[task] = name
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A gate's read or check never dies silently."""
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "agent.gate_task_died",
                task=task.get_name(),
                machine=self.machine_id,
                error=repr(task.exception()),
            )

    # ---- the actions

    async def _read_restarts(self, name: str, judge: HealthGate, ask: int) -> None:
        try:
            read = RestartsRead(ask, await self.systemd.n_restarts(name))
        except (FleetdError, OSError) as err:
            read = RestartsRead(ask, None, str(err))
        log.info(
            "agent.gate_nrestarts",
            unit=name,
            machine=self.machine_id,
            gate=judge.gate.token,
            nrestarts=read.count,
            error=read.error or None,
        )
        self._handle(name, judge, read)

    async def _run_check(
        self, name: str, judge: HealthGate, ask: int, command: str, env: dict[str, str]
    ) -> None:
        done = await run_check(command, {"PATH": os.environ.get("PATH") or _PATH, **env})
        log.info(
            "agent.gate_check",
            unit=name,
            machine=self.machine_id,
            gate=judge.gate.token,
            check=command,
            status=done.status,
            error=done.error or None,
            output=done.output.strip().splitlines()[0][:200] if done.output.strip() else None,
        )
        self._handle(name, judge, CheckDone(ask, done.status, done.output, done.error))


async def run_check(command: str, env: dict[str, str]) -> CheckDone:
    """Run a health check (`/bin/sh -c COMMAND`, in its own process group, stdin closed, stdout
    and stderr together) to its end or `CHECK_TIMEOUT`; its status, or None and why not."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        return CheckDone(0, None, "", f"could not run: {err}")
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        return CheckDone(0, None, "", f"timed out after {CHECK_TIMEOUT:g}s")
    finally:
        if proc.returncode is None:  # timed out, or the gate ended: the check goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode("utf-8", "replace")[:_OUTPUT_LIMIT]
    return CheckDone(0, proc.returncode, text)
