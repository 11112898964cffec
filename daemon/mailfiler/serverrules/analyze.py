"""Marks on server rules, whatever the backend: which move or copy mail into a
tracked folder, which point at a folder that does not exist, and which send
mail past tracking (discard, reject, redirect or forward mail from a domain or
address that a tracked folder's record owns, or move it to Trash or Junk).

A rule's conditions are judged against each owned domain and address in
three values: surely matches, surely not, or depends on the message (the
subject, say).  A rule is marked when it surely matches that sender's mail,
or when it depends on the message but one of its sender tests names the
domain: "discard mail from contoso.com whose subject says x" is marked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mailfiler.sources.inboxrules import Condition, ServerRule

#: the fields that say who sent a message
SENDER_FIELDS = frozenset({"from", "sender", "envelope:from", "return-path"})
#: actions after which the message does not reach the mailbox as it would have
_PAST = {
    "delete": "discards",
    "reject": "rejects",
    "redirect": "redirects",
    "forward": "forwards a copy of",
}
_MIN_FRAGMENT = 3  # a :contains value shorter than this ("@", ".c") says nothing about a sender


@dataclass(frozen=True)
class Owner:
    """A record that a tracked folder stands for, with what it owns."""

    ref: str
    folder: str
    domains: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()


@dataclass
class Context:
    """What the marks are judged against (one mailbox)."""

    #: tracked folder -> its regarding ENTITY:KEY (or None)
    tracked: dict[str, str | None]
    #: the folders that exist on the server ("/"-separated); None: not known
    present: set[str] | None = None
    owners: list[Owner] = field(default_factory=list)
    #: folders that count as deleting (Trash, Junk: auto-tracking's exclude list)
    trash: Callable[[str], bool] = lambda folder: False


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def _in_domain(domain: str, owned: str) -> bool:
    return domain == owned or domain.endswith("." + owned)


def _regex(pattern: str, subject: str) -> bool | None:
    try:
        import re2

        return re2.search(pattern, subject) is not None
    except Exception:  # noqa: BLE001 - a pattern RE2 cannot run: no verdict
        return None


def _value_hits(match: str, part: str | None, value: str, domain: str | None, address: str | None) -> bool | None:
    """Does one key of a sender test match mail from ``domain`` (or from ``address``)?"""
    v = value.lower()
    if part in ("localpart", "user", "detail"):
        return None
    if part == "domain":
        if domain is None:
            domain = _domain_of(address or "")
        samples = [domain, "sub." + domain]
        if match == "is":
            return _in_domain(v, domain)
        if match == "contains":
            return len(v.strip(".")) >= _MIN_FRAGMENT and v in domain
        if match == "matches":
            return any(fnmatch.fnmatchcase(s, v) for s in samples)
        if match == "regex":
            return _regex(v, domain)
        return None
    # a whole address (address :all, envelope, or a header's text)
    sample = address if address is not None else f"someone@{domain}"
    if match == "is":
        if address is not None:
            return v == address
        return "@" in v and _in_domain(_domain_of(v), domain or "")
    if match == "contains":
        if len(v.strip("@.")) < _MIN_FRAGMENT:
            return None
        return v in sample or (domain is not None and v in "@" + domain)
    if match == "matches":
        return fnmatch.fnmatchcase(sample, v)
    if match == "regex":
        return _regex(v, sample)
    return None


def judge(cond: Condition | None, domain: str | None, address: str | None) -> tuple[bool | None, bool]:
    """(True/False/None: the condition surely holds / surely not / depends, a sender test named it)."""
    if cond is None or cond.op == "true":
        return True, False
    if cond.op == "false":
        return False, False
    if cond.op == "not":
        value, _ = judge(cond.children[0], domain, address)
        return (None if value is None else not value), False
    if cond.op in ("allof", "anyof"):
        results = [judge(c, domain, address) for c in cond.children]
        values = [v for v, _ in results]
        hit = any(h for _, h in results)
        if cond.op == "allof":
            value = False if False in values else True if all(v is True for v in values) else None
        else:
            value = True if True in values else False if all(v is False for v in values) else None
        return value, hit
    if not SENDER_FIELDS.intersection(cond.fields):
        return None, False
    verdicts = [_value_hits(cond.match, cond.part, v, domain, address) for v in cond.values]
    if True in verdicts:
        return True, True
    if verdicts and all(v is False for v in verdicts):
        return False, False
    return None, False


def _caught(rule: ServerRule, owner: Owner) -> list[str]:
    """The owner's domains and addresses whose mail the rule surely (or by name) catches."""
    found = []
    for domain in sorted(owner.domains):
        value, hit = judge(rule.conditions, domain, None)
        if value is True or (value is None and hit):
            found.append(domain)
    for address in sorted(owner.addresses):
        value, hit = judge(rule.conditions, None, address)
        if value is True or (value is None and hit):
            found.append(address)
    return found


def _files_into_tracked(rule: ServerRule, ctx: Context) -> str | None:
    return next((a.target for a in rule.actions if a.kind in ("move", "copy") and a.target in ctx.tracked), None)


def _filers(rules: list[ServerRule], ctx: Context) -> list[tuple[int, str, str, set[str]]]:
    """(position, rule name, tracked folder, senders it surely files) for each rule that files into one."""
    out = []
    for i, rule in enumerate(rules):
        folder = _files_into_tracked(rule, ctx)
        if folder is None or not rule.enabled:
            continue
        senders = set()
        for owner in ctx.owners:
            for sender in owner.domains | owner.addresses:
                domain, address = (None, sender) if "@" in sender else (sender, None)
                if judge(rule.conditions, domain, address)[0] is True:
                    senders.add(sender)
        if senders:
            out.append((i, rule.name, folder, senders))
    return out


def mark(rules: Iterable[ServerRule], ctx: Context) -> None:
    """Fill in each rule's ``marks``; ``rules`` in the order the server runs them.

    Sieve goes on after discard, redirect and fileinto: a message that another
    rule surely files into a tracked folder is not lost by a discard, unless
    the discarding rule stops first (other stops in between are not followed)."""
    rules = list(rules)
    lowered = {f.lower() for f in ctx.present or ()}
    filers = _filers(rules, ctx)
    for i, rule in enumerate(rules):
        rule.marks = []
        for act in rule.actions:
            if act.kind not in ("move", "copy") or not act.target:
                continue
            folder = act.target
            if folder in ctx.tracked:
                ref = ctx.tracked[folder]
                rule.marks.append(
                    {
                        "kind": "tracked",
                        "folder": folder,
                        "text": f"{'moves' if act.kind == 'move' else 'copies'} mail into the tracked folder {folder}"
                        + (f" (regarding {ref})" if ref else ""),
                    }
                )
            if ctx.present is not None and folder.upper() != "INBOX" and folder.lower() not in lowered:
                rule.marks.append(
                    {"kind": "missing-folder", "folder": folder, "text": f"the folder {folder} does not exist"}
                )
        if not rule.enabled:
            continue
        stops = any(a.kind == "stop" for a in rule.actions)
        filed = {
            sender: f"rule {name!r} files it into {folder} {'before' if j < i else 'too'}"
            for j, name, folder, senders in reversed(filers)
            if j != i and (j < i or not stops)
            for sender in senders
        }
        if rule.owned:
            continue
        verbs = [_PAST[a.kind] for a in rule.actions if a.kind in _PAST]
        verbs += [f"moves to {a.target}" for a in rule.actions if a.kind == "move" and a.target and ctx.trash(a.target)]
        if not verbs:
            continue
        verb = " and ".join(dict.fromkeys(verbs))
        everything = rule.conditions is None or rule.conditions.op == "true"
        for owner in ctx.owners:
            caught = _caught(rule, owner)
            if not caught:
                continue
            lost = [c for c in caught if c not in filed]
            what = "all mail" if everything else f"mail from {(lost or caught)[0]}"
            if not lost:
                rule.marks.append(
                    {
                        "kind": "note",
                        "record": owner.ref,
                        "folder": owner.folder,
                        "text": f"{verb} {what}, but {filed[caught[0]]}: it is tracked",
                    }
                )
                continue
            rule.marks.append(
                {
                    "kind": "past-tracking",
                    "record": owner.ref,
                    "folder": owner.folder,
                    "text": f"{verb} {what}, which {owner.ref} owns (tracked folder {owner.folder})"
                    if not everything
                    else f"{verb} all mail, {owner.ref}'s too (tracked folder {owner.folder})",
                }
            )


def warnings(rules: Iterable[ServerRule]) -> list[str]:
    """One line per missing-folder or past-tracking mark."""
    out = []
    for rule in rules:
        for m in rule.marks:
            if m["kind"] in ("missing-folder", "past-tracking"):
                out.append(f"rule {rule.name!r} ({rule.where}): {m['text']}")
    return out


__all__ = ["Context", "Owner", "judge", "mark", "warnings"]
