"""The fake Exchange's answers to what the sync-back targets send (contacts and calendar items,
extended properties, UpdateItem with ChangeKeys), compared element by element with the examples
of Microsoft's EWS reference (office-developer-exchange-docs: updateitem-operation-contact.md,
getitem-operation-calendar-item.md, how-to-work-with-hidden-folders-by-using-ews-in-exchange.md for
the shape of an ExtendedProperty in an answer, how-to-create-appointments-in-a-specific-time-zone
for the CreateItem request with one).  Helpers as in test_ews_documented.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.fakes.ews.test_ews_documented import (
    ERROR_WITH_ITEMS,
    ITEM_ID_ANSWER,
    PLAIN_SUCCESS,
    SYNC_FOLDER_ITEMS,
    Client,
    client,
    expect,
    outline,
)
from tests.fakes.ews.test_ews_documented import M as M_NS
from tests.fakes.ews.test_ews_documented import T as T_NS

__all__ = ["client"]

# the GetFolder answer of the hidden-folders article, its ExtendedProperty on an item instead
EXTENDED_ANSWER = """
m:GetItemResponse
  m:ResponseMessages
    m:GetItemResponseMessage [ResponseClass]
      m:ResponseCode
      m:Items
        t:CalendarItem
          t:ItemId [ChangeKey Id]
          t:ExtendedProperty
            t:ExtendedFieldURI [{attrs}]
            t:Value
          t:Start
"""
# getitem-operation-calendar-item.md, the IdOnly answer
ID_ONLY_CALENDAR = """
m:GetItemResponse
  m:ResponseMessages
    m:GetItemResponseMessage [ResponseClass]
      m:ResponseCode
      m:Items
        t:CalendarItem
          t:ItemId [ChangeKey Id]
"""
CENTRAL = (
    "<t:CalendarItem><t:Subject>Appointment created using Central time zone</t:Subject>"
    '<t:Body BodyType="HTML">Time zone: (UTC-06:00) Central Time (US &amp;amp; Canada)</t:Body>'
    '<t:ExtendedProperty><t:ExtendedFieldURI DistinguishedPropertySetId="Appointment" PropertyId="33332" '
    'PropertyType="String" /><t:Value>(UTC-06:00) Central Time (US &amp; Canada)</t:Value></t:ExtendedProperty>'
    "<t:Start>2023-02-07T18:00:00.000-06:00</t:Start><t:End>2023-02-07T19:00:00.000-06:00</t:End>"
    '<t:StartTimeZone Id="Central Standard Time" /><t:EndTimeZone Id="Central Standard Time" /></t:CalendarItem>'
)
APPOINTMENT_URI = (
    '<t:ExtendedFieldURI DistinguishedPropertySetId="Appointment" PropertyId="33332" PropertyType="String"/>'
)


def _create(client: Client, folder: str, item: str) -> tuple[str, str]:
    _, got = client.call(
        f'<m:CreateItem SendMeetingInvitations="SendToNone"><m:SavedItemFolderId><t:DistinguishedFolderId '
        f'Id="{folder}"/></m:SavedItemFolderId><m:Items>{item}</m:Items></m:CreateItem>'
    )
    ref = got.find(f".//{{{T_NS}}}ItemId")
    assert ref is not None
    return ref.get("Id", ""), ref.get("ChangeKey", "")


def test_an_extended_property_is_answered_when_asked_for(client: Client) -> None:
    item_id, _ = _create(client, "calendar", CENTRAL)
    shape = f"<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>{APPOINTMENT_URI}"
    shape += '<t:FieldURI FieldURI="calendar:Start"/></t:AdditionalProperties></m:ItemShape>'
    _, got = client.call(f'<m:GetItem>{shape}<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>')
    attrs = "DistinguishedPropertySetId PropertyId PropertyType"
    assert outline(got) == expect(EXTENDED_ANSWER, attrs=attrs)
    assert got.findtext(f".//{{{T_NS}}}Value") == "(UTC-06:00) Central Time (US & Canada)"
    assert got.findtext(f".//{{{T_NS}}}Start") == "2023-02-08T00:00:00Z"  # Exchange answers instants in UTC
    # AllProperties does not give extended properties (properties-and-extended-properties-in-ews)
    _, got = client.call(
        f'<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
    )  # fmt: skip
    assert got.find(f".//{{{T_NS}}}ExtendedProperty") is None
    _, got = client.call(
        f'<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
    )  # fmt: skip
    assert outline(got) == expect(ID_ONLY_CALENDAR)


def test_update_item_of_a_contact_matches_the_documented_example(client: Client) -> None:
    contact = '<t:Contact><t:GivenName>Tanja</t:GivenName><t:EmailAddresses><t:Entry Key="EmailAddress1">tplate@example.com</t:Entry></t:EmailAddresses></t:Contact>'  # fmt: skip
    item_id, key = _create(client, "contacts", contact)
    change = (
        '<t:SetItemField><t:IndexedFieldURI FieldURI="contacts:EmailAddress" FieldIndex="EmailAddress1"/><t:Contact>'
        '<t:EmailAddresses><t:Entry Key="EmailAddress1">changedemail@example.com</t:Entry></t:EmailAddresses>'
        "</t:Contact></t:SetItemField>"
    )

    def update(resolution: str, change_key: str) -> tuple[ET.Element, ET.Element]:
        return client.call(
            f'<m:UpdateItem ConflictResolution="{resolution}"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item_id}" '
            f'ChangeKey="{change_key}"/><t:Updates>{change}</t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>'
        )

    _, got = update("AlwaysOverwrite", key)
    assert outline(got) == expect(ITEM_ID_ANSWER, op="UpdateItem", tag="Contact")
    answer = got.find(f".//{{{T_NS}}}ItemId")
    assert answer is not None
    new_key = answer.get("ChangeKey", "")
    assert new_key != key
    # NeverOverwrite with the ChangeKey of before: the documented conflict answer, nothing written
    _, got = update("NeverOverwrite", key)
    assert outline(got) == expect(ERROR_WITH_ITEMS, op="UpdateItem")
    assert got.findtext(f".//{{{M_NS}}}ResponseCode") == "ErrorIrresolvableConflict"
    _, got = update("NeverOverwrite", new_key)
    assert outline(got) == expect(ITEM_ID_ANSWER, op="UpdateItem", tag="Contact")


def test_sync_folder_items_of_the_contacts_folder(client: Client) -> None:
    _create(client, "contacts", "<t:Contact><t:GivenName>Tanja</t:GivenName></t:Contact>")
    _, got = client.call(
        "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId>"
        '<t:DistinguishedFolderId Id="contacts"/></m:SyncFolderId><m:MaxChangesReturned>100</m:MaxChangesReturned>'
        "</m:SyncFolderItems>"
    )
    assert outline(got) == expect(SYNC_FOLDER_ITEMS.replace("t:Message", "t:Contact"))


def test_booleans_are_answered_true_or_false(client: Client) -> None:
    event = "<t:CalendarItem><t:Subject>Holiday</t:Subject><t:Start>2024-05-01T00:00:00Z</t:Start><t:End>2024-05-02T00:00:00Z</t:End><t:IsAllDayEvent>1</t:IsAllDayEvent></t:CalendarItem>"  # fmt: skip
    item_id, _ = _create(client, "calendar", event)
    _, got = client.call(
        f'<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:IsAllDayEvent"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
    )  # fmt: skip
    assert got.findtext(f".//{{{T_NS}}}IsAllDayEvent") == "true"
    _, got = client.call(
        f'<m:DeleteItem DeleteType="MoveToDeletedItems" SendMeetingCancellations="SendToNone"><m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:DeleteItem>'
    )  # fmt: skip
    assert outline(got) == expect(PLAIN_SUCCESS, op="DeleteItem")


# how-to-create-a-recurring-series-by-using-ews-in-exchange.md (its request, attendees left out)
SERIES = (
    '<t:CalendarItem><t:Subject>Weekly Update Meeting</t:Subject><t:Body BodyType="HTML">Come hear about it</t:Body>'
    "<t:ReminderMinutesBeforeStart>30</t:ReminderMinutesBeforeStart><t:Start>2014-03-08T13:21:32.868-08:00</t:Start>"
    "<t:End>2014-03-08T14:21:32.868-08:00</t:End><t:Location>Contoso Main Gallery</t:Location><t:Recurrence>"
    "<t:WeeklyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>Saturday</t:DaysOfWeek></t:WeeklyRecurrence>"
    "<t:NumberedRecurrence><t:StartDate>2014-03-08-08:00</t:StartDate><t:NumberOfOccurrences>10</t:NumberOfOccurrences>"
    "</t:NumberedRecurrence></t:Recurrence></t:CalendarItem>"
)
# how-to-access-a-recurring-series-by-using-ews-in-exchange.md: GetItem of an OccurrenceItemId
OCCURRENCE_ANSWER = """
m:GetItemResponse
  m:ResponseMessages
    m:GetItemResponseMessage [ResponseClass]
      m:ResponseCode
      m:Items
        t:CalendarItem
          t:ItemId [ChangeKey Id]
          t:Start
          t:CalendarItemType
"""
# modifiedoccurrences.md, occurrence.md, deletedoccurrences.md, deletedoccurrence.md
SERIES_ANSWER = """
m:GetItemResponse
  m:ResponseMessages
    m:GetItemResponseMessage [ResponseClass]
      m:ResponseCode
      m:Items
        t:CalendarItem
          t:ItemId [ChangeKey Id]
          t:CalendarItemType
          t:ModifiedOccurrences
            t:Occurrence
              t:ItemId [ChangeKey Id]
              t:Start
              t:End
              t:OriginalStart
          t:DeletedOccurrences
            t:DeletedOccurrence
              t:Start
"""


def test_occurrences_of_a_series_match_the_documented_examples(client: Client) -> None:
    master_id, _ = _create(client, "calendar", SERIES)
    shape = '<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:CalendarItemType" /><t:FieldURI FieldURI="calendar:Start" /></t:AdditionalProperties></m:ItemShape>'  # fmt: skip
    _, got = client.call(f'<m:GetItem>{shape}<m:ItemIds><t:OccurrenceItemId RecurringMasterId="{master_id}" InstanceIndex="2" /></m:ItemIds></m:GetItem>')  # fmt: skip
    assert outline(got) == expect(OCCURRENCE_ANSWER)
    assert got.findtext(f".//{{{T_NS}}}Start") == "2014-03-15T21:21:32Z"
    assert got.findtext(f".//{{{T_NS}}}CalendarItemType") == "Occurrence"
    _, got = client.call(
        f'<m:UpdateItem ConflictResolution="AutoResolve" SendMeetingInvitationsOrCancellations="SendToNone"><m:ItemChanges><t:ItemChange><t:OccurrenceItemId RecurringMasterId="{master_id}" InstanceIndex="2" /><t:Updates><t:SetItemField><t:FieldURI FieldURI="item:Subject"/><t:CalendarItem><t:Subject>Moved</t:Subject></t:CalendarItem></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>'
    )  # fmt: skip
    assert outline(got) == expect(ITEM_ID_ANSWER, op="UpdateItem", tag="CalendarItem")
    _, got = client.call(
        f'<m:DeleteItem DeleteType="HardDelete" SendMeetingCancellations="SendToNone"><m:ItemIds><t:OccurrenceItemId RecurringMasterId="{master_id}" InstanceIndex="3" /></m:ItemIds></m:DeleteItem>'
    )  # fmt: skip
    assert outline(got) == expect(PLAIN_SUCCESS, op="DeleteItem")
    fields = "".join(f'<t:FieldURI FieldURI="calendar:{n}"/>' for n in ("CalendarItemType", "ModifiedOccurrences", "DeletedOccurrences"))  # fmt: skip
    _, got = client.call(
        f'<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>{fields}</t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{master_id}"/></m:ItemIds></m:GetItem>'
    )  # fmt: skip
    assert outline(got) == expect(SERIES_ANSWER)
    assert got.findtext(f".//{{{T_NS}}}OriginalStart") == "2014-03-15T21:21:32Z"
    assert got.findtext(f".//{{{T_NS}}}DeletedOccurrence/{{{T_NS}}}Start") == "2014-03-22T21:21:32Z"
    _, got = client.call(f'<m:GetItem>{shape}<m:ItemIds><t:OccurrenceItemId RecurringMasterId="{master_id}" InstanceIndex="11" /></m:ItemIds></m:GetItem>')  # fmt: skip
    assert got.findtext(f".//{{{M_NS}}}ResponseCode") == "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange"
