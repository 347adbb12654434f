"""The membership room: leases, machines, their unit states and metadata, restart requests.

A machine is present while its agent's lease lives: `machine/<id>` and every
`state/<name>/<id>` it publishes are on that lease, so an agent that dies (or is cut off)
leaves with all its states at once, and watchers see it go. What outlives the lease is what
the API writes about a machine: its dynamic metadata (`machine-meta/<id>`) and the restarts
asked of its units (`restart/<name>/<id>`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from fleetd.model import DynamicMetadata, Machine, RestartRequest, UnitState
from fleetd.registry.cas import LOST, Lost, until_won
from fleetd.registry.errors import JobNotFound, MachineIdInUse
from fleetd.registry.kv import Cmp, Delete, Get, KeyValue, Put, chunked
from fleetd.registry.leases import Lease
from fleetd.registry.room import Room

__all__ = ["Membership"]

log = structlog.get_logger(__name__)

_STATES_PER_TXN = 100  # puts per txn: under etcd's default limit of 128 operations


class Membership(Room):
    """Machines, their leases, states, metadata and restart requests."""

    async def grant_lease(self, ttl: int, lease_id: int | None = None) -> Lease:
        """A kept-alive lease: `lease_id` is re-used when etcd still has it, else a new one."""
        if lease_id:
            left = await self.etcd.time_to_live(lease_id)
            # etcd rounds what is left down to whole seconds (-1: gone): 0 may still be alive,
            # and the re-attached lease is renewed at once (a miss shows as a lost lease).
            if left >= 0:
                log.info("registry.lease_reattached", lease=lease_id, ttl_left=left)
                return Lease(self.etcd, lease_id, ttl, reattached=True).start()
            log.info("registry.lease_expired_before_reattach", lease=lease_id)
        new_id, granted = await self.etcd.grant(ttl)
        log.info("registry.lease_granted", lease=new_id, ttl=granted)
        return Lease(self.etcd, new_id, granted, reattached=False).start()

    async def register_machine(
        self, machine: Machine, ttl: int, lease_id: int | None = None
    ) -> Lease:
        """Publish a machine under a kept-alive lease (re-using `lease_id` if still alive).

        Refused with MachineIdInUse when another lease holds the machine's key.
        """
        lease = await self.grant_lease(ttl, lease_id)
        key = self.keys.machine(machine.id)
        try:
            res = await self.etcd.txn(
                [Cmp(key, "version", "==", 0)], [Put(key, machine.encode(), lease.id)], [Get(key)]
            )
            if not res.succeeded:
                current = res.gets[0][0] if res.gets[0] else None
                if current is not None and current.lease != lease.id:
                    current = await self._take_over_expired(key, current)
                if current is None:  # the holder's lease had expired: register afresh
                    res = await self.etcd.txn(
                        [Cmp(key, "version", "==", 0)], [Put(key, machine.encode(), lease.id)]
                    )
                    if not res.succeeded:
                        raise MachineIdInUse(machine.id)
                    log.info(
                        "registry.machine_registered",
                        machine=machine.id,
                        lease=lease.id,
                        ttl=lease.ttl,
                    )
                    return lease
                if current.lease != lease.id:
                    raise MachineIdInUse(machine.id)
                res = await self.etcd.txn(
                    [Cmp(key, "mod", "==", current.mod_revision)],
                    [Put(key, machine.encode(), lease.id)],
                )
                if not res.succeeded:
                    raise MachineIdInUse(machine.id)
        except BaseException:
            if not lease.reattached:
                await lease.release()
                await self.etcd.revoke(lease.id)
            else:
                await lease.release()
            raise
        log.info("registry.machine_registered", machine=machine.id, lease=lease.id, ttl=lease.ttl)
        return lease

    async def set_machine_metadata(self, changes: Mapping[str, Mapping[str, str]]) -> None:
        """Set dynamic metadata (API PATCH /machines): `{machine_id: {key: value}}`, where
        value "" deletes the key from the machine's effective metadata, configured or not.

        Stored per machine at `machine-meta/<id>`, apart from the machine's registration and
        without a lease: it survives re-registration and overrides the configured metadata
        (fleet kept it under `machines/<id>/metadata/`). A machine not registered (yet) is not
        an error, as in fleet: its metadata applies when it registers. All machines change in
        one txn, guarded on each document being unchanged since it was read.
        """
        keys = {mid: self.keys.machine_meta(mid) for mid in sorted(changes)}

        async def attempt() -> Lost | None:
            res = await self.etcd.txn([], [Get(key) for key in keys.values()])
            guards: list[Cmp] = []
            ops: list[Put | Delete | Get] = []
            for (mid, key), found in zip(keys.items(), res.gets, strict=True):
                current: dict[str, str] = {}
                if found:
                    doc = self.decode(found[0])
                    if isinstance(doc, DynamicMetadata):
                        current = dict(doc.values)
                    guards.append(Cmp(key, "mod", "==", found[0].mod_revision))
                else:
                    guards.append(Cmp(key, "version", "==", 0))
                ops.append(Put(key, DynamicMetadata(mid, {**current, **changes[mid]}).encode()))
            res = await self.etcd.txn(guards, ops)
            if not res.succeeded:
                return LOST
            for mid in keys:
                log.info("registry.machine_metadata_set", machine=mid, changes=changes[mid])
            return None

        await until_won(
            attempt, "setting machine metadata kept conflicting with concurrent writers"
        )

    async def update_machine(self, machine: Machine, lease: Lease) -> bool:
        """Write a registered machine's document again (SIGHUP: new metadata or reservations),
        on the lease that holds it, guarded on the key being unchanged since it was read.
        False when `lease` no longer holds it: the next registration writes the document."""
        key = self.keys.machine(machine.id)
        _, current = await self.etcd.get(key)
        if current is None or current.lease != lease.id:
            return False
        res = await self.etcd.txn(
            [Cmp(key, "mod", "==", current.mod_revision)], [Put(key, machine.encode(), lease.id)]
        )
        if res.succeeded:
            log.info("registry.machine_updated", machine=machine.id, lease=lease.id)
        return res.succeeded

    async def _take_over_expired(self, key: str, current: KeyValue) -> KeyValue | None:
        """A key held by a lease etcd already reports expired (its keys are deleted a moment
        later, on etcd's own expiry sweep): delete it now, guarded on it being unchanged.
        Returns None when it was removed, else the live holder's key."""
        if current.lease and await self.etcd.time_to_live(current.lease) <= 0:
            res = await self.etcd.txn(
                [Cmp(key, "mod", "==", current.mod_revision)], [Delete(key)], [Get(key)]
            )
            if res.succeeded:
                log.info("registry.expired_holder_removed", key=key, lease=current.lease)
                return None
            return res.gets[0][0] if res.gets and res.gets[0] else None
        return current

    async def publish_state(self, state: UnitState, lease: Lease) -> None:
        """Publish what systemd says of a unit on this machine, on the machine's lease."""
        await self.etcd.put(self.keys.state(state.name, state.machine_id), state.encode(), lease.id)
        log.debug(
            "registry.state_published",
            unit=state.name,
            machine=state.machine_id,
            active=state.active,
            sub=state.sub,
        )

    async def publish_states(self, states: Sequence[UnitState], lease: Lease) -> None:
        """Publish many states of this machine's units, on its lease, in as few txns as
        etcd's operation limit allows (a burst of changes is one revision, not one each)."""
        for chunk in chunked(states, _STATES_PER_TXN):
            puts = [Put(self.keys.state(s.name, s.machine_id), s.encode(), lease.id) for s in chunk]
            await self.etcd.txn([], puts)
            log.debug("registry.states_published", machine=chunk[0].machine_id, count=len(chunk))

    async def request_restart(self, name: str, machine_id: str, token: str) -> RestartRequest:
        """Ask the agent of `machine_id` to restart `name` once (`restart/<name>/<machine>`,
        no lease), replacing an earlier request there; guarded on the job existing (else
        JobNotFound), so nothing outlives a destroy (which deletes the requests with the job)."""
        request = RestartRequest(name, machine_id, token)
        res = await self.etcd.txn(
            [Cmp(self.keys.job(name), "version", ">", 0)],
            [Put(self.keys.restart(name, machine_id), request.encode())],
        )
        if not res.succeeded:
            raise JobNotFound(name)
        log.info("registry.restart_requested", unit=name, machine=machine_id, token=token)
        return request

    async def remove_states(self, names: Sequence[str], machine_id: str) -> None:
        """Remove the published states of units unloaded on `machine_id`, 100 per txn."""
        for chunk in chunked(names, _STATES_PER_TXN):
            await self.etcd.txn([], [Delete(self.keys.state(n, machine_id)) for n in chunk])
            log.info("registry.states_removed", units=list(chunk), machine=machine_id)

    async def remove_state(self, name: str, machine_id: str) -> None:
        await self.etcd.delete(self.keys.state(name, machine_id))
        log.info("registry.state_removed", unit=name, machine=machine_id)
