"""mailfiler: files email from tracked mailbox folders into a CRM store."""

__version__ = "0.1.0"
