from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.util.secrets import SecretUnavailable, read_secret


def test_reads_and_strips_newline(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    assert read_secret(str(f), what="x") == "s3cret"


def test_credentials_directory_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db-password").write_text("pw")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("${CREDENTIALS_DIRECTORY}/db-password", what="x") == "pw"


def test_errors_name_the_file_not_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretUnavailable, match="only set under systemd"):
        read_secret("${CREDENTIALS_DIRECTORY}/db-password", what="database_password_file")
    with pytest.raises(SecretUnavailable, match="cannot read"):
        read_secret(str(tmp_path / "missing"), what="database_password_file")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretUnavailable, match="is empty"):
        read_secret(str(tmp_path / "empty"), what="database_password_file")
