"""Templates: plain substitution, filters, and nothing else."""

from __future__ import annotations

import pytest

from mailfiler.rules.templates import Template, TemplateError, slug


def test_render() -> None:
    t = Template.parse("account:{account|slug}-{n|upper} {{literal}} {from.address}")
    assert t.names == {"account", "n", "from.address"}
    assert (
        t.render({"account": "Åkesson AB", "n": "cas-1", "from.address": "a@b"})
        == "account:akesson-ab-CAS-1 {literal} a@b"
    )


def test_values_are_never_interpreted() -> None:
    # a capture holding template or format syntax is substituted as text
    t = Template.parse("{x}")
    assert t.render({"x": "{y} {0.__class__} %s"}) == "{y} {0.__class__} %s"


def test_missing_name_renders_empty() -> None:
    assert Template.parse("a{x}b").render({}) == "ab"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{", "unbalanced '{'"),
        ("}", "unbalanced '}'"),
        ("a{b", "unbalanced"),
        ("{}", "empty {}"),
        ("{0}", "is not a name"),
        ("{x.__class__}", "is not a name"),
        ("{a.b.c}", "is not a name"),
        ("{x!r}", "is not a name"),
        ("{x:>10}", "is not a name"),
        ("{x|title}", "unknown filter 'title'"),
    ],
)
def test_bad_templates(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.parse(source)


def test_slug() -> None:
    assert slug("Åkesson AB") == "akesson-ab"
    assert slug("  Contoso, Ltd.  ") == "contoso-ltd"
    assert slug("Øresund_Bro") == "øresund-bro"
