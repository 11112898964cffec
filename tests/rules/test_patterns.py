"""Folder patterns, domains, sizes and regex compilation."""

from __future__ import annotations

import unicodedata

import pytest

from mailfiler.rules.patterns import PatternError, compile_folder, compile_regex, parse_domain, parse_size


@pytest.mark.parametrize(
    ("pattern", "folder", "captures"),
    [
        ("Clients/{account}", "Clients/Contoso", {"account": "Contoso"}),
        ("Clients/{account}", "clients/Contoso", {"account": "Contoso"}),  # case-insensitive, capture as written
        ("Clients/{account}", "Clients/Contoso/2024", None),  # {name} is one segment
        ("Clients/{account}", "Clients", None),
        ("Kunder/{account}", "Kunder/Åkesson AB", {"account": "Åkesson AB"}),
        ("Kunder/{account}", "KUNDER/Åkesson AB", {"account": "Åkesson AB"}),
        ("Kunder/Åkesson AB", unicodedata.normalize("NFD", "Kunder/Åkesson AB"), {}),  # macOS-style names
        ("Private/**", "Private", {}),
        ("Private/**", "Private/a", {}),
        ("Private/**", "Private/a/b/c", {}),
        ("Private/**", "Privately", None),
        ("**/Archive", "Archive", {}),
        ("**/Archive", "A/B/Archive", {}),
        ("**/Archive", "A/B/Archived", None),
        ("a/**/b", "a/b", {}),
        ("a/**/b", "a/x/y/b", {}),
        ("a/**/b", "ab", None),
        ("**", "anything/at/all", {}),
        ("*/Archive", "2024/Archive", {}),
        ("*/Archive", "a/2024/Archive", None),
        ("Client*", "Clients", {}),
        ("Cases/CAS-{number}", "Cases/CAS-01001", {"number": "01001"}),
        ("Clients/{account}/**", "Clients/Contoso/Invoices/2024", {"account": "Contoso"}),
        ("Clients/{account}/**", "Clients/Contoso", {"account": "Contoso"}),
        ("{year}/{month}", "2024/05", {"year": "2024", "month": "05"}),
        ("Clients (old)/{a}", "Clients (old)/X", {"a": "X"}),  # regex characters are literal
        ("a.b/{x}", "aXb/y", None),
    ],
)
def test_folder_pattern(pattern: str, folder: str, captures: dict | None) -> None:
    assert compile_folder(pattern).match(folder) == captures


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "must not be empty"),
        ("/Clients", "relative path"),
        ("Clients/", "relative path"),
        ("a//b", "relative path"),
        ("Clients/**x", r"\*\* must be a whole segment"),
        ("Clients/{1x}", "must name a capture"),
        ("Clients/{}", "must name a capture"),
        ("{a}/{a}", "captured twice"),
        ("Clients/{a", "unbalanced"),
    ],
)
def test_bad_folder_pattern(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=message):
        compile_folder(pattern)


def test_domains() -> None:
    assert parse_domain("Contoso.COM") == ("contoso.com", False)
    assert parse_domain("*.contoso.com") == ("contoso.com", True)
    assert parse_domain(".contoso.com") == ("contoso.com", True)
    assert parse_domain("@contoso.com") == ("contoso.com", False)
    for bad in ("", "*", "a b.com", "x@y.com", "a..b", "*.*.com"):
        with pytest.raises(PatternError):
            parse_domain(bad)


def test_sizes() -> None:
    assert parse_size(0) == 0
    assert parse_size("100") == 100
    assert parse_size("100 B") == 100
    assert parse_size("1k") == 1024
    assert parse_size("512KB") == 512 * 1024
    assert parse_size("10MB") == 10 * 1024**2
    assert parse_size("1.5 MiB") == int(1.5 * 1024**2)
    assert parse_size("2gb") == 2 * 1024**3
    for bad in (-1, True, "ten", "10 TB", None, 1.5):
        with pytest.raises(PatternError):
            parse_size(bad)


def test_regex_names_and_rejections() -> None:
    assert compile_regex("(?P<number>CAS-\\d+)").names == {"number"}
    with pytest.raises(PatternError, match="backreferences"):
        compile_regex("(a)\\1")
    with pytest.raises(PatternError, match="lookahead"):
        compile_regex("foo(?=bar)")
    with pytest.raises(PatternError, match="negative lookahead"):
        compile_regex("foo(?!bar)")
    with pytest.raises(PatternError, match="lookbehind"):
        compile_regex("(?<=a)b")
    with pytest.raises(PatternError, match=r"\\z"):
        compile_regex("end\\Z")
    with pytest.raises(PatternError, match="missing"):
        compile_regex("(unclosed")
