"""The one credential model: how any backend, CalDAV/CardDAV server or
(later) SMTP relay logs in.  A config model that logs in subclasses
:class:`Credentials`; :func:`mailfiler.util.secrets.provider` turns it into
the secret at login time.  Secrets themselves never appear in the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from mailfiler.config.base import Strict, secret_path

#: the ways to give a secret; at most one per login
SECRET_KEYS = ("password_file", "password_command", "oauth2_token_command")


class Credentials(Strict):
    """Login secrets.  ``${CREDENTIALS_DIRECTORY}`` (systemd's ``LoadCredential=``)
    is expanded in file names when they are read; commands are argv, no shell."""

    password_file: str | None = Field(
        default=None, description="File holding the password; ${CREDENTIALS_DIRECTORY} is expanded when read."
    )
    password_command: list[str] | None = Field(
        default=None, description="Program (argv, no shell) that prints the password; run at each login."
    )
    oauth2_token_command: list[str] | None = Field(
        default=None,
        description=(
            "Program (argv, no shell) that prints an OAuth2 access token, or JSON with access_token and"
            " expires_in; run again when the token expires or is refused."
        ),
    )
    client_cert: str | None = Field(default=None, description="PEM file of a TLS client certificate (and key).")
    client_key: str | None = Field(default=None, description="PEM file of the client certificate's private key.")
    secret_timeout: float = Field(
        default=30.0, gt=0, le=300, description="Seconds a password or token command may take."
    )

    #: the keys that give a secret (a subclass adds its older names)
    secret_key_names: ClassVar[tuple[str, ...]] = SECRET_KEYS

    def secret_keys(self) -> list[str]:
        """The secret keys given."""
        return [k for k in self.secret_key_names if getattr(self, k) is not None]

    @property
    def token_command(self) -> list[str] | None:
        """The OAuth2 token command, under whichever name it was given."""
        return self.oauth2_token_command

    def provider(self, what: str) -> SecretProvider | None:
        """The secret at login time (None: no secret configured).  ``what``
        names the login in errors, e.g. ``imap login for alice@host``."""
        from mailfiler.util.secrets import SecretProvider

        if not self.secret_keys():
            return None
        return SecretProvider(
            what,
            password_file=self.password_file,
            password_command=list(self.password_command) if self.password_command else None,
            oauth2_token_command=list(self.token_command) if self.token_command else None,
            timeout=self.secret_timeout,
        )

    def credential_problem(self, *, required: bool) -> str | None:
        """What is wrong with the combination of keys, or None."""
        given = self.secret_keys()
        if len(given) > 1 or (required and not given):
            names = ", ".join(self.secret_key_names)
            return f"give {'exactly' if required else 'at most'} one of {names}" + (
                f" (got {', '.join(given)})" if given else ""
            )
        if self.client_key is not None and self.client_cert is None:
            return "client_key needs client_cert"
        return None

    def resolved_credentials(self, base_dir: Path) -> dict[str, object]:
        """model_copy updates that make its files absolute (relative to the config file)."""
        return {
            "password_file": secret_path(self.password_file, base_dir),
            "client_cert": secret_path(self.client_cert, base_dir),
            "client_key": secret_path(self.client_key, base_dir),
        }

    def secret_files(self) -> list[tuple[str, str]]:
        """(key, path spec) of every file here that holds a secret (a
        certificate holds one when its key is in the same file)."""
        keys = ["password_file", "client_key" if self.client_key else "client_cert"]
        return [(k, getattr(self, k)) for k in keys if getattr(self, k)]


def secret_file_warnings(config: BaseModel, extra: list[tuple[str, str]] | None = None) -> list[str]:
    """A warning for every secret file in the config that other users can read
    (``config check`` prints them; the daemon logs them at start).  ``extra``:
    (what, path spec) of secret files outside a :class:`Credentials` block."""
    from mailfiler.util.secrets import permission_problem

    found: list[tuple[str, str]] = list(extra or [])

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Credentials):
            found.extend((f"{where}.{key}", spec) for key, spec in value.secret_files())
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(config, "")
    problems = (permission_problem(spec, what=what) for what, spec in found)
    return [p for p in problems if p is not None]


def config_secret_warnings(config: Any) -> list[str]:
    """:func:`secret_file_warnings` of a whole config, its database password included."""
    extra = [("database_password_file", config.database_password_file)] if config.database_password_file else []
    return secret_file_warnings(config, extra)


if TYPE_CHECKING:
    from mailfiler.util.secrets import SecretProvider

__all__ = ["SECRET_KEYS", "Credentials", "config_secret_warnings", "secret_file_warnings"]
