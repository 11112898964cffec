"""Who a request acts for, and how it names folders and items (ids, distinguished ids, mailboxes)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tests.servers.ews import occurrences
from tests.servers.ews.model import Folder, Item, Mailbox, Store, User
from tests.servers.ews.soap import EwsError, q


@dataclass
class Context:
    store: Store
    principal: User  # who authenticated
    target: str  # the mailbox acted on by default: the impersonated user, else the principal
    impersonating: bool
    anchor: str  # X-AnchorMailbox, lower-case ("" if absent)

    def check_access(self, smtp: str) -> None:
        """Own mailbox, the impersonated one, or delegate access granted by the mailbox's owner."""
        smtp = smtp.lower()
        if smtp == self.target:
            return
        owner = self.store.users.get(smtp)
        if owner is None:
            raise EwsError("ErrorNonExistentMailbox", f"No mailbox with such guid or SMTP address: {smtp}")
        if self.principal.smtp.lower() not in owner.delegates:
            raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def folder(self, elem: ET.Element) -> tuple[Mailbox, Folder]:
        """A <t:FolderId> or <t:DistinguishedFolderId> (with an optional <t:Mailbox>)."""
        if elem.tag == q("t:DistinguishedFolderId"):
            smtp = self.target
            mailbox_elem = elem.find(q("t:Mailbox"))
            if mailbox_elem is not None:
                smtp = (mailbox_elem.findtext(q("t:EmailAddress")) or smtp).strip().lower()
            self.check_access(smtp)
            mailbox = self.store.mailbox(smtp)
            return mailbox, mailbox.distinguished(elem.get("Id") or "")
        if elem.tag == q("t:FolderId"):
            mailbox, folder = self.store.folder(elem.get("Id") or "")
            self.check_access(mailbox.user.smtp)
            return mailbox, folder
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")

    def folders(self, container: ET.Element | None) -> list[ET.Element]:
        return [] if container is None else list(container)

    def item(self, elem: ET.Element) -> tuple[Mailbox, Item]:
        """A <t:ItemId>, or a <t:OccurrenceItemId> (an occurrence of a recurring series)."""
        if elem.tag == q("t:OccurrenceItemId"):
            mailbox, item = occurrences.resolve(self.store, elem)
        else:
            mailbox, item = self.store.item(elem.get("Id") or "")
        self.check_access(mailbox.user.smtp)
        return mailbox, item
