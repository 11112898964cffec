from __future__ import annotations

import contextlib

import psycopg


def _select_one(url: str) -> int:
    with contextlib.closing(psycopg.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("select 1")
        return cur.fetchone()[0]


def test_postgres_url_answers(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://test@127.0.0.1:")
    assert postgres_url.endswith("/mailfiler")
    assert _select_one(postgres_url) == 1


def test_fresh_postgres_url_is_a_separate_empty_database(postgres_url: str, fresh_postgres_url: str) -> None:
    assert fresh_postgres_url != postgres_url
    assert _select_one(fresh_postgres_url) == 1
    with contextlib.closing(psycopg.connect(fresh_postgres_url)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from information_schema.tables where table_schema = 'public'")
        assert cur.fetchone()[0] == 0
        cur.execute("show server_encoding")
        assert cur.fetchone()[0] == "UTF8"
