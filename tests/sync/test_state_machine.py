"""A hypothesis state machine over both sides (vdirsyncer's SyncMachine).

Random creates, edits and deletes in the CRM and in the user's vdir folder,
with syncs in between.  A model written from the rules in README "Sync-back"
(not from the engine) says what each sync must produce; after every sync
both sides must equal the model.  That checks at once that the sides agree,
that the filters hold (a private card never reaches the CRM, an unlinked
contact never comes back), and that nothing is lost outside the conflict
policy and the delete rule.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mailfiler.config.syncschema import SyncFilter
from mailfiler.store import db as storedb
from mailfiler.store.detailmodels import ContactDetails
from mailfiler.store.migrations import migrate
from mailfiler.store.models import Record
from mailfiler.sync.crm import ContactStore
from tests.sync.helpers import OWNER, Rig, crm_contact, crm_contacts, make_mailbox, policy

FIELDS = ("job_title", "notes")
VALUES = st.sampled_from(["", "a", "b", "Åsa"])
OTHER = "erik@example.com"
CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:;{name};;;\r\n{extra}END:VCARD\r\n"


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: the engine fsyncs every write, which a disk makes slow
        shm = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
        self.tmp = Path(tempfile.mkdtemp(prefix="syncmachine-", dir=shm))
        self.db = storedb.connect(f"sqlite:///{self.tmp / 'store.sqlite3'}")
        migrate(self.db)
        self.rig = Rig(self.db, self.tmp, make_mailbox())
        self.n = 0
        # the model
        self.crm: dict[str, dict[str, str]] = {}  # name -> fields, as the CRM must be
        self.mine: dict[str, dict[str, str]] = {}  # name -> fields, as the user's folder must be
        self.private: set[str] = set()  # the user's own cards, never tracked
        self.linked: set[str] = set()  # on both sides, in the status
        self.unlinked: set[str] = set()  # deleted by the user, kept in the CRM, not coming back
        self.base: dict[str, dict[str, str]] = {}  # the values agreed at the last sync
        self.files: dict[str, str] = {}  # name -> file name on the user's side
        self.owned: set[str] = set()  # CRM contacts the mailbox owner owns: the filter selects them
        self.tracked: set[str] = set()  # linked because the user tracked them: no filter applies

    @initialize(conflicts=st.sampled_from(["crm-wins", "mailbox-wins"]),
                on_delete=st.sampled_from(["unlink", "restore", "delete-in-crm"]))  # fmt: skip
    def configure(self, conflicts: str, on_delete: str) -> None:
        self.conflicts, self.on_delete = conflicts, on_delete
        self.rig.contacts_policy = policy(
            conflicts=conflicts, on_mailbox_delete=on_delete, filters=[SyncFilter(owner="mailbox")]
        )

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _name(self) -> str:
        self.n += 1
        return f"Kontakt {self.n}"

    # --- the CRM side ------------------------------------------------------------------

    @rule(job=VALUES, notes=VALUES, owned=st.sampled_from([True, True, False]))
    def crm_create(self, job: str, notes: str, owned: bool) -> None:
        name = self._name()
        crm_contact(f"k{self.n}", name, job_title=job, notes=notes, owner=OWNER if owned else OTHER)
        self.crm[name] = {"job_title": job, "notes": notes}
        if owned:
            self.owned.add(name)

    @precondition(lambda self: self.crm)
    @rule(data=st.data(), owned=st.booleans())
    def crm_reassign(self, data: st.DataObject, owned: bool) -> None:
        """The CRM item starts or stops matching the sync filter."""
        name = data.draw(st.sampled_from(sorted(self.crm)))
        rec = Record.get(Record.name == name)
        ContactDetails.update(owner=OWNER if owned else OTHER).where(ContactDetails.record == rec).execute()
        if owned:
            self.owned.add(name)
        else:
            self.owned.discard(name)

    @precondition(lambda self: self.crm)
    @rule(data=st.data(), field=st.sampled_from(FIELDS), value=VALUES)
    def crm_edit(self, data: st.DataObject, field: str, value: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.crm)))
        ContactStore().write(Record.get(Record.name == name).id, {field: value})
        self.crm[name][field] = value

    @precondition(lambda self: self.crm)
    @rule(data=st.data())
    def crm_delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.crm)))
        Record.delete().where(Record.name == name).execute()
        del self.crm[name]

    # --- the user's side ---------------------------------------------------------------

    @rule(job=VALUES, tracked=st.booleans())
    def mine_create(self, job: str, tracked: bool) -> None:
        name = self._name()
        extra = (f"TITLE:{job}\r\n" if job else "") + ("CATEGORIES:Tracked\r\n" if tracked else "")
        filename = f"user-{self.n}.vcf"
        self.rig.write_item("contacts", filename, CARD.format(uid=f"user-{self.n}", name=name, extra=extra).encode())
        self.files[name] = filename
        self.mine[name] = {"job_title": job, "notes": ""}
        if not tracked:
            self.private.add(name)

    @precondition(lambda self: self.mine)
    @rule(data=st.data(), field=st.sampled_from(FIELDS), value=VALUES)
    def mine_edit(self, data: st.DataObject, field: str, value: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.mine)))
        self.rig.edit_contact(self.files[name], **{field: value})
        self.mine[name][field] = value

    @precondition(lambda self: self.mine)
    @rule(data=st.data())
    def mine_delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.mine)))
        (self.rig.contacts_dir / self.files.pop(name)).unlink()
        del self.mine[name]
        self.private.discard(name)

    # --- both sides between two syncs (what makes conflicts; random steps alone rarely line up) ---

    @precondition(lambda self: self.linked & set(self.crm) & set(self.mine))
    @rule(data=st.data(), field=st.sampled_from(FIELDS))
    def conflict(self, data: st.DataObject, field: str) -> None:
        """Both sides change one field of a synced contact to different values, then a sync."""
        name = data.draw(st.sampled_from(sorted(self.linked & set(self.crm) & set(self.mine))))
        base = self.base[name][field]
        crm_value = data.draw(VALUES.filter(lambda v: v != base))
        my_value = data.draw(VALUES.filter(lambda v: v not in (base, crm_value)))
        self.crm_edit(_Given(name), field, crm_value)
        self.mine_edit(_Given(name), field, my_value)
        self.sync()

    @precondition(lambda self: self.linked & set(self.crm) & set(self.mine))
    @rule(data=st.data(), field=st.sampled_from(FIELDS), crm_deletes=st.booleans())
    def delete_and_edit(self, data: st.DataObject, field: str, crm_deletes: bool) -> None:
        """One side deletes a synced contact, the other edits it, then a sync."""
        name = data.draw(st.sampled_from(sorted(self.linked & set(self.crm) & set(self.mine))))
        value = data.draw(VALUES.filter(lambda v: v != self.base[name][field]))
        if crm_deletes:
            self.mine_edit(_Given(name), field, value)
            self.crm_delete(_Given(name))
        else:
            self.crm_edit(_Given(name), field, value)
            self.mine_delete(_Given(name))
        self.sync()

    # --- sync ----------------------------------------------------------------------------

    @rule()
    def sync(self) -> None:
        import asyncio

        guard = bool(self.linked) and (not self.mine or not (set(self.crm) & self.owned))
        if guard:
            before = (crm_contacts(), self.rig.files())
            [r] = asyncio.run(self.rig.sync("contacts"))
            assert r.state == "stopped", r
            assert (crm_contacts(), self.rig.files()) == before  # nothing done
            self.rig.force_delete = True
        try:
            [r] = asyncio.run(self.rig.sync("contacts"))
        finally:
            self.rig.force_delete = False
        assert r.state == "ok", r.errors
        self._expect()
        self._check()

    def _expect(self) -> None:
        """The model's sync: README "Sync-back", item by item."""
        crm, mine = self.crm, self.mine

        def selected(name: str) -> bool:
            return name in crm and name in self.owned

        def merged(name: str) -> dict[str, str]:
            out = {}
            for f in FIELDS:
                c, m, b = crm[name][f], mine[name][f], self.base[name][f]
                if c == m or m == b:
                    out[f] = c
                elif c == b:
                    out[f] = m
                else:
                    out[f] = c if self.conflicts == "crm-wins" else m
            return out

        for name in sorted(self.linked):
            in_scope = name in self.tracked or selected(name)
            in_crm, in_mine = name in crm, name in mine
            if not in_crm and not in_mine:
                self._drop(name)
            elif not in_crm:
                if self.conflicts == "mailbox-wins" and mine[name] != self.base[name]:
                    crm[name] = dict(mine[name])  # the edit beats the deletion: re-created, owned by the user
                    self.owned.add(name)
                else:
                    self._drop(name)
            elif not in_mine:
                if not in_scope:
                    self._drop(name)
                elif self.on_delete == "unlink":
                    self._drop(name)
                    self.unlinked.add(name)
                elif self.on_delete == "restore":
                    mine[name] = dict(crm[name])  # uploaded again: from now on it came from the CRM
                    self.tracked.discard(name)
                else:
                    self._drop(name)
                    del crm[name]
            elif not in_scope:
                crm[name] = merged(name)  # the user's last edits are kept, then the copy goes
                self._drop(name)
            else:
                crm[name] = dict(merged(name))
                mine[name] = dict(crm[name])
        for name in sorted(crm):
            if selected(name) and name not in self.linked and name not in self.unlinked:
                mine[name] = dict(crm[name])
                self.linked.add(name)
        for name in sorted(mine):
            if name not in self.linked and name not in self.private:
                crm[name] = dict(mine[name])  # tracked by the user, owned by them
                self.linked.add(name)
                self.tracked.add(name)
                self.owned.add(name)
        self.unlinked = {n for n in self.unlinked if selected(n)}
        self.base = {name: dict(crm[name]) for name in self.linked}

    def _drop(self, name: str) -> None:
        """No longer on the user's side nor in the status."""
        self.linked.discard(name)
        self.tracked.discard(name)
        if name in self.mine:
            del self.mine[name]
            self.files.pop(name, None)

    def _check(self) -> None:
        actual_crm = {n: {f: v[f] for f in FIELDS} for n, v in crm_contacts().items()}
        actual_mine = {n: {f: v[f] for f in FIELDS} for n, v in self.rig.by_name().items()}
        assert actual_crm == self.crm
        assert actual_mine == self.mine
        # files created by a restore or an upload have new names: learn them
        for filename, parsed in self.rig.parsed("contacts").items():
            self.files[parsed.fields["name"]] = filename

    @invariant()
    def private_cards_never_reach_the_crm(self) -> None:
        names = {r.name for r in Record.select(Record.name).where(Record.entity == "contact")}
        assert not (names & self.private)


class _Given:
    """Stands in for ``st.data()`` when one rule calls another with a chosen item."""

    def __init__(self, value: str) -> None:
        self.value = value

    def draw(self, strategy: object) -> str:
        return self.value


SyncMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncMachine = SyncMachine.TestCase
