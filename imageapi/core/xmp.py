"""XMP packets: finding them and reading the few properties imageapi uses.

Properties come back keyed by a fixed prefix per namespace URI ("exif:DateTimeOriginal",
"xmp:CreateDate", ...), whatever prefix the file declared (old Adobe files say "xap:"). Values are
strings; for an rdf:Alt/Seq/Bag the first item. The packet is parsed as XML when it is well formed
and has no DTD (XMP never needs one, and refusing it keeps entity expansion out); otherwise a
tolerant pattern scan over `prefix:Name="value"` and `<prefix:Name>value</prefix:Name>` gets what it
can. Nothing here raises on bad content.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

# Namespace URI -> the prefix used in our keys.
NAMESPACES = {
    "http://ns.adobe.com/exif/1.0/": "exif",
    "http://ns.adobe.com/xap/1.0/": "xmp",
    "http://ns.adobe.com/photoshop/1.0/": "photoshop",
    "http://ns.adobe.com/exif/1.0/aux/": "aux",
    "http://cipa.jp/exif/1.0/": "exifEX",
    "http://ns.adobe.com/tiff/1.0/": "tiff",
}
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

JPEG_APP1_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
MAX_PACKET = 4 * 1024 * 1024   # larger "XMP" is not metadata we want to parse

_START = re.compile(rb"<x:xmpmeta|<x:xapmeta|<rdf:RDF")
_ENDS = (b"</x:xmpmeta>", b"</x:xapmeta>", b"</rdf:RDF>")


def packet_from_jpeg_app1(payload: bytes) -> bytes | None:
    """The packet of a JPEG APP1 segment when it is the (standard) XMP one."""
    if payload.startswith(JPEG_APP1_HEADER):
        return payload[len(JPEG_APP1_HEADER):]
    return None


def _trim(packet: bytes) -> bytes | None:
    """The XML between the xmpmeta (or rdf:RDF) start and end tags; None when there is none."""
    m = _START.search(packet)
    if m is None:
        return None
    start = m.start()
    end = -1
    for tag in _ENDS:
        pos = packet.rfind(tag)
        if pos > start:
            end = max(end, pos + len(tag))
    return packet[start:end] if end > 0 else packet[start:]


def parse(packet: bytes | str | None) -> dict[str, str]:
    """The known-namespace properties of an XMP packet ({} when there is nothing usable)."""
    if not packet:
        return {}
    raw = packet.encode("utf-8", "replace") if isinstance(packet, str) else bytes(packet)
    if len(raw) > MAX_PACKET:
        return {}
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM: rare, but XMP allows it
        raw = raw.decode("utf-16", "replace").encode("utf-8")
    body = _trim(raw)
    if body is None:
        return {}
    if b"<!DOCTYPE" not in body and b"<!ENTITY" not in body:
        try:
            return _from_tree(ET.fromstring(body))
        except ET.ParseError:
            pass
    return _from_text(body.decode("utf-8", "replace"))


def _key(tag: str) -> str | None:
    """'{uri}Local' -> 'prefix:Local' for the namespaces we know."""
    if not tag.startswith("{"):
        return None
    uri, _, local = tag[1:].partition("}")
    prefix = NAMESPACES.get(uri)
    return f"{prefix}:{local}" if prefix else None


def _element_value(el: ET.Element) -> str | None:
    children = list(el)
    if not children:
        return (el.text or "").strip() or None
    # <rdf:Alt>/<rdf:Seq>/<rdf:Bag> -> the first <rdf:li>
    for container in children:
        if container.tag in (f"{{{RDF}}}Alt", f"{{{RDF}}}Seq", f"{{{RDF}}}Bag"):
            for li in container:
                if li.tag == f"{{{RDF}}}li":
                    return (li.text or "").strip() or None
    return None


def _from_tree(root: ET.Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for desc in root.iter(f"{{{RDF}}}Description"):
        for name, value in desc.attrib.items():
            key = _key(name)
            if key and value.strip():
                out.setdefault(key, value.strip())
        for child in desc:
            key = _key(child.tag)
            if key is None or key in out:
                continue
            text = _element_value(child)
            if text:
                out[key] = text
    return out


_XMLNS = re.compile(r'xmlns:([\w.-]+)\s*=\s*["\']([^"\']+)["\']')
_ATTR = re.compile(r'([\w.-]+):([\w.-]+)\s*=\s*"([^"]*)"')
_ELEM = re.compile(r"<([\w.-]+):([\w.-]+)>\s*([^<]*?)\s*</\1:\2>")
_LIST_ELEM = re.compile(
    r"<([\w.-]+):([\w.-]+)>\s*<rdf:(?:Alt|Seq|Bag)>\s*<rdf:li[^>]*>([^<]*)</rdf:li>", re.S)


def _from_text(text: str) -> dict[str, str]:
    """Pattern scan for packets that are not well-formed XML (cut short, stray bytes)."""
    prefixes = {p: NAMESPACES[uri] for p, uri in _XMLNS.findall(text) if uri in NAMESPACES}
    out: dict[str, str] = {}
    for pattern in (_ATTR, _ELEM, _LIST_ELEM):
        for prefix, local, value in pattern.findall(text):
            ours = prefixes.get(prefix)
            value = value.strip()
            if ours and value:
                out.setdefault(f"{ours}:{local}", value)
    return out
