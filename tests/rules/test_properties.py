"""Property tests: evaluating never raises, whatever the message."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfiler.rules import Address, Facts, is_auto_submitted, load_rules, split_display_name
from tests.rules.helpers import ENTITIES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = load_rules([REPO / "rules"], known_entities=ENTITIES)

# Every kind of text, lone surrogates (undecodable 8-bit bytes) and NUL included.
text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)
address = st.builds(
    Address,
    address=st.one_of(text, st.builds(lambda a, b: f"{a}@{b}", text, text)),
    name=text,
)
addresses = st.lists(address, max_size=4).map(tuple)
header = st.tuples(
    st.one_of(text, st.sampled_from(["Auto-Submitted", "Precedence", "X-Ticket-Id", "List-Unsubscribe", "X-Priority"])),
    text,
)
facts = st.builds(
    Facts,
    mailbox=text,
    folder=st.one_of(st.none(), text, st.sampled_from(["Clients/Åkesson AB", "Private/x", "Kunder/A/B"])),
    direction=st.one_of(text, st.sampled_from(["incoming", "outgoing"])),
    from_=addresses,
    to=addresses,
    cc=addresses,
    bcc=addresses,
    subject=st.one_of(text, st.just("Re: CAS-01001 urgent")),
    body=text,
    headers=st.lists(header, max_size=8).map(tuple),
    has_attachment=st.booleans(),
    size=st.integers(min_value=-(2**63), max_value=2**63),
    content_type=st.one_of(text, st.just("multipart/report")),
    sender_entities=st.frozensets(st.sampled_from(ENTITIES), max_size=3),
    recipient_entities=st.frozensets(st.sampled_from(ENTITIES), max_size=3),
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(facts)
def test_evaluate_never_raises(f: Facts) -> None:
    d = EXAMPLES.evaluate(f)
    assert d.action in (None, "track", "skip")
    assert all(not t.why.startswith("internal error") for t in d.trace)
    d.to_dict()  # and the result serialises


@SETTINGS
@given(facts)
def test_auto_submitted_never_raises(f: Facts) -> None:
    assert isinstance(is_auto_submitted(f), bool)


@SETTINGS
@given(text, text)
def test_split_display_name_never_raises(name: str, addr: str) -> None:
    first, last = split_display_name(name, addr)
    assert isinstance(first, str) and isinstance(last, str)
