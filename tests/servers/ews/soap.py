"""SOAP envelopes of the fake Exchange: namespaces, parsing, response and fault builders.

The element names, their order and their namespaces follow the request/response
examples of Microsoft's EWS reference (web-service-reference/*-operation.md);
tests/fakes/ews/test_ews_documented.py compares the answers with those examples.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"
PREFIXES = {"s": SOAP, "m": MNS, "t": TNS, "e": ENS}
for _prefix, _uri in PREFIXES.items():
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True)
class Build:
    """What the ServerVersionInfo header says (exchangelib pins its API version from it)."""

    major: int
    minor: int
    major_build: int
    minor_build: int
    version: str  # the Version attribute Exchange 2013 and later send

    def header(self) -> ET.Element:
        return el(
            "t:ServerVersionInfo",
            MajorVersion=str(self.major),
            MinorVersion=str(self.minor),
            MajorBuildNumber=str(self.major_build),
            MinorBuildNumber=str(self.minor_build),
            Version=self.version,
        )


# Exchange 2016 CU23 and Exchange 2019 CU14 report these builds; both send Version="V2017_07_11".
EXCHANGE_2016 = Build(15, 1, 2507, 6, "V2017_07_11")
EXCHANGE_2019 = Build(15, 2, 1544, 4, "V2017_07_11")
BUILDS = {"2016": EXCHANGE_2016, "2019": EXCHANGE_2019}


def q(name: str) -> str:
    """'t:Folder' -> '{types-namespace}Folder'."""
    prefix, _, local = name.partition(":")
    return f"{{{PREFIXES[prefix]}}}{local}"


def el(tag: str, text: str | None = None, /, **attrs: str) -> ET.Element:
    elem = ET.Element(q(tag), {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        elem.text = text
    return elem


def sub(parent: ET.Element, tag: str, text: str | None = None, /, **attrs: str) -> ET.Element:
    child = el(tag, text, **attrs)
    parent.append(child)
    return child


def local(elem: ET.Element) -> str:
    return elem.tag.rpartition("}")[2]


def text_of(parent: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = parent.find(q(tag))
    if child is None or child.text is None:
        return default
    return child.text.strip()


class BadRequest(Exception):
    """Not a SOAP request the fake understands: answered with an ErrorSchemaValidation fault."""


def parse_envelope(body: bytes) -> tuple[ET.Element | None, ET.Element]:
    """The SOAP Header (or None) and the operation element inside the Body."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise BadRequest(f"not XML: {e}") from None
    if root.tag != q("s:Envelope"):
        raise BadRequest("not a SOAP envelope")
    soap_body = root.find(q("s:Body"))
    if soap_body is None or len(soap_body) == 0:
        raise BadRequest("no SOAP body")
    return root.find(q("s:Header")), soap_body[0]


def envelope(content: ET.Element, build: Build) -> bytes:
    env = el("s:Envelope")
    header = sub(env, "s:Header")
    header.append(build.header())
    sub(env, "s:Body").append(content)
    return ET.tostring(env, encoding="utf-8", xml_declaration=True)


def response(operation: str, messages: list[ET.Element]) -> ET.Element:
    """<m:OpResponse><m:ResponseMessages>messages</m:ResponseMessages></m:OpResponse>"""
    resp = el(f"m:{operation}Response")
    container = sub(resp, "m:ResponseMessages")
    container.extend(messages)
    return resp


def success(operation: str) -> ET.Element:
    message = el(f"m:{operation}ResponseMessage", ResponseClass="Success")
    sub(message, "m:ResponseCode", "NoError")
    return message


def error(operation: str, code: str, text: str) -> ET.Element:
    """An Error response message: MessageText, ResponseCode, DescriptiveLinkKey (the documented order);
    the caller appends the operation's empty containers (e.g. <m:Items/>)."""
    message = el(f"m:{operation}ResponseMessage", ResponseClass="Error")
    sub(message, "m:MessageText", text)
    sub(message, "m:ResponseCode", code)
    sub(message, "m:DescriptiveLinkKey", "0")
    return message


class EwsError(Exception):
    """One failing response message (an id not found, a conflict): the operation answers Error for that part."""

    def __init__(self, code: str, text: str):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class SoapFault(Exception):
    """A failure of the whole request, answered as a SOAP fault (HTTP 500), as Exchange does for
    ErrorServerBusy, ErrorImpersonateUserDenied, ErrorSchemaValidation."""

    def __init__(self, code: str, text: str, back_off_ms: int | None = None):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.back_off_ms = back_off_ms


def fault(code: str, text: str, build: Build, back_off_ms: int | None = None) -> bytes:
    """A SOAP 1.1 fault whose detail carries the EWS ResponseCode (errors namespace) and, for
    ErrorServerBusy, <t:MessageXml><t:Value Name="BackOffMilliseconds">."""
    env = el("s:Envelope")
    sub(env, "s:Header").append(build.header())
    body = sub(env, "s:Body")
    fault_elem = sub(body, "s:Fault")
    # faultcode/faultstring/detail are unqualified in SOAP 1.1
    ET.SubElement(fault_elem, "faultcode").text = "a:" + code
    ET.SubElement(fault_elem, "faultstring").text = text
    detail = ET.SubElement(fault_elem, "detail")
    sub(detail, "e:ResponseCode", code)
    sub(detail, "e:Message", text)
    if back_off_ms is not None:
        xml = sub(detail, "t:MessageXml")
        sub(xml, "t:Value", str(back_off_ms), Name="BackOffMilliseconds")
    return ET.tostring(env, encoding="utf-8", xml_declaration=True)
