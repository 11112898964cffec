"""Rule evaluation cost per message with many rules, beside parsing cost.

Not a test: prints medians (microseconds) and the ratio to the cost of
parsing the same message with mailfiler's parser, measured in this run.

    .venv/bin/python bench/rules.py [--rules 500] [--messages 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailfiler.config.schema import BUILTIN_ENTITIES  # noqa: E402
from mailfiler.rules import Facts, load_rules  # noqa: E402
from mailfiler.tracking.parse import parse_message  # noqa: E402
from tests.mailgen import realistic_message  # noqa: E402


def rule_file(n: int) -> str:
    """``n`` rules of the kinds admins write, none of which match the corpus
    (so every message walks the whole list: the worst case)."""
    out = ["rules:"]
    for i in range(n):
        kind = i % 5
        out.append(f"  - name: r{i}")
        if kind == 0:
            out.append(f"    when: {{subject: '(?P<n>TICKET-{i:05d}-\\d+)'}}")
            out.append("    then: {regarding: {entity: case, key: '{n}'}}")
        elif kind == 1:
            out.append(f"    when: {{from_domain: [client{i}.example, '.client{i}.example']}}")
            out.append(f"    then: {{regarding: 'account:client{i}'}}")
        elif kind == 2:
            out.append(f"    when: {{folder: 'Clients{i}/{{account}}/**'}}")
            out.append("    then: {regarding: {entity: account, name: '{account}'}}")
        elif kind == 3:
            out.append(f"    when: {{all: [{{direction: incoming}}, {{body: 'order number {i}-(?P<o>\\d{{6}})'}}]}}")
            out.append("    then: {categories: [orders]}")
        else:
            out.append(f"    when: {{header: {{X-Campaign: 'campaign-{i}'}}}}")
            out.append("    then: skip")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=500)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(rule_file(args.rules), encoding="utf-8")
        t0 = time.perf_counter()
        ruleset = load_rules([path], known_entities=BUILTIN_ENTITIES)
        load_s = time.perf_counter() - t0

    raws = [realistic_message(i) for i in range(args.messages)]
    parse_us, eval_us = [], []
    for raw in raws:
        t0 = time.perf_counter()
        msg = parse_message(raw)
        parse_us.append((time.perf_counter() - t0) * 1e6)
        facts = Facts.from_parsed(msg, mailbox="alice", folder="INBOX", direction="incoming")
        t0 = time.perf_counter()
        decision = ruleset.evaluate(facts)
        eval_us.append((time.perf_counter() - t0) * 1e6)
        assert decision.rule is None, "the benchmark rules must not match"
    result = {
        "rules": args.rules,
        "messages": args.messages,
        "load_s": round(load_s, 3),
        "evaluate_median_us": round(statistics.median(eval_us), 1),
        "evaluate_p90_us": round(statistics.quantiles(eval_us, n=10)[-1], 1),
        "parse_median_us": round(statistics.median(parse_us), 1),
    }
    result["ratio_evaluate_to_parse"] = round(result["evaluate_median_us"] / result["parse_median_us"], 2)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.rules} rules loaded in {result['load_s']} s; {args.messages} realistic messages, none matching")
    ev, p90 = result["evaluate_median_us"], result["evaluate_p90_us"]
    print(f"  evaluate (all rules tried)  median {ev:>9} us  p90 {p90} us")
    print(f"  parse_message (baseline)    median {result['parse_median_us']:>9} us")
    print(f"  ratio evaluate/parse        {result['ratio_evaluate_to_parse']}x")


if __name__ == "__main__":
    main()
