"""Folder paths <-> EWS folder ids (synchronous: runs in the client's pool).

Paths are display names from the top of the message store, "/"-separated,
with the Inbox as ``INBOX`` (any case) as in the other backends:
``INBOX/Clients/Contoso``.  Only mail folders (class IPF.Note and its
sub-classes) are listed; a "/" inside a folder name cannot be told apart
from a separator and such a folder is left out."""

from __future__ import annotations

from dataclasses import dataclass

from exchangelib import Account
from exchangelib.fields import FieldPath
from exchangelib.folders import Folder, FolderCollection

INBOX = "INBOX"
_FIELDS = ("name", "parent_folder_id", "folder_class")


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    parent: str | None
    folder_class: str | None


class Tree:
    """One FindFolder (Deep) of the message store."""

    def __init__(self, root_id: str, inbox_id: str, nodes: list[Node]) -> None:
        self.root_id = root_id
        self.inbox_id = inbox_id
        self.nodes = {n.id: n for n in nodes}
        self.paths: dict[str, str] = {}  # id -> path
        for node in nodes:
            path = self._path(node)
            if path is not None:
                self.paths[node.id] = path
        self.by_path = {path_key(p): i for i, p in self.paths.items()}

    def _path(self, node: Node) -> str | None:
        if node.folder_class is not None and not node.folder_class.startswith("IPF.Note"):
            return None
        parts: list[str] = []
        cur: Node | None = node
        for _ in range(64):  # a cycle would be the server's bug; do not loop on it
            if cur is None:
                return None
            if cur.id == self.inbox_id:
                parts.append(INBOX)
                break
            if "/" in cur.name:
                return None
            parts.append(cur.name)
            if cur.parent == self.root_id:
                break
            cur = self.nodes.get(cur.parent or "")
        return "/".join(reversed(parts))

    def find(self, path: str) -> str | None:
        return self.by_path.get(path_key(path))


def path_key(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts and parts[0].upper() == INBOX:
        parts[0] = INBOX
    return "/".join(parts)


def load_tree(account: Account) -> Tree:
    root = account.msg_folder_root
    fields = {FieldPath(field=Folder.get_field_by_fieldname(f)) for f in _FIELDS}
    found = FolderCollection(account=account, folders=[root]).find_folders(depth="Deep", additional_fields=fields)
    nodes = [
        Node(f.id, f.name or "", f.parent_folder_id.id if f.parent_folder_id else None, f.folder_class)
        for f in found
        if not isinstance(f, Exception)
    ]
    return Tree(root.id, account.inbox.id, nodes)


def folder_by_id(account: Account, folder_id: str) -> Folder:
    return Folder(root=account.root, id=folder_id)


def create_path(account: Account, path: str) -> str:
    """Make each missing folder of ``path``; its id."""
    tree = load_tree(account)
    found = tree.find(path)
    if found is not None:
        return found
    parts = [p for p in path_key(path).split("/") if p]
    parent_id, done = tree.root_id, []
    for part in parts:
        done.append(part)
        existing = tree.find("/".join(done))
        if existing is not None:
            parent_id = existing
            continue
        parent = account.msg_folder_root if parent_id == tree.root_id else folder_by_id(account, parent_id)
        new = Folder(parent=parent, name=part, folder_class="IPF.Note")
        new.save()
        parent_id = new.id
    return parent_id


__all__ = ["INBOX", "Tree", "create_path", "folder_by_id", "load_tree", "path_key"]
