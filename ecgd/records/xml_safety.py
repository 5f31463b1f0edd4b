"""The one place ecgd parses untrusted XML (defusedxml underneath), plus the strict
field accessors the XML readers share (every missing or malformed field is a RecordError
naming the file and the field, never the field's value).

Policy: no entity is ever declared, expanded or fetched. A DOCTYPE that only names an
external DTD (GE MUSE exports start with ``<!DOCTYPE RestingECG SYSTEM "restecg.dtd">``)
is tolerated and never fetched; a DOCTYPE with an internal subset (where entities, the
billion-laughs bomb and external-entity reads are declared) is refused outright, as are
entity declarations and external references. The file is size-checked before it is read
and read at most ``max_bytes`` at a time.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import List, Optional

import defusedxml
import defusedxml.ElementTree as SafeElementTree
import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import read_record_bytes

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SEPARATOR = re.compile(r"[\s,]")
_CHUNK_CHARS = 1 << 20
_UTF8_BOM = b"\xef\xbb\xbf"


class _InternalSubsetForbidden(defusedxml.DTDForbidden):
    """A DOCTYPE declared an internal subset."""


class _SafeParser(SafeElementTree.DefusedXMLParser):
    """defusedxml's parser, refusing any DOCTYPE internal subset as well."""

    def __init__(self) -> None:
        super().__init__(forbid_dtd=False, forbid_entities=True, forbid_external=True)
        self.parser.StartDoctypeDeclHandler = self._start_doctype

    @staticmethod
    def _start_doctype(name: str, sysid: Optional[str], pubid: Optional[str],
                       has_internal_subset: int) -> None:
        if has_internal_subset:
            raise _InternalSubsetForbidden(name, sysid, pubid)


def parse_xml(path: Path, max_bytes: int) -> ElementTree.Element:
    """Parse ``path`` safely and return its root element.

    Raises RecordError naming the file when it is over ``max_bytes``, unreadable, not
    well-formed, or declares entities / an internal DTD subset / external references.
    """
    path = Path(path)
    data = read_record_bytes(path, max_bytes)
    parser = _SafeParser()
    try:
        parser.feed(data)
        return parser.close()
    except _InternalSubsetForbidden as exc:
        raise RecordError(f"{path.name}: XML declares an internal DTD subset; refused "
                          f"(entities are never expanded)") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise RecordError(f"{path.name}: XML declares an entity; refused (entities are never "
                          f"expanded)") from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        raise RecordError(f"{path.name}: XML references an external resource; refused") from exc
    except defusedxml.DefusedXmlException as exc:
        raise RecordError(f"{path.name}: unsafe XML refused ({type(exc).__name__})") from exc
    except ElementTree.ParseError as exc:
        # expat's messages hold a fixed reason and a position, never the document's text
        raise RecordError(f"{path.name}: not well-formed XML: {exc}") from exc
    except LookupError as exc:
        raise RecordError(f"{path.name}: the XML declaration names an unknown character "
                          f"encoding") from exc
    except ValueError as exc:
        # expat refuses multi-byte encodings other than UTF-8/UTF-16 with a ValueError
        raise RecordError(f"{path.name}: the XML declaration names a character encoding the "
                          f"parser cannot read") from exc


def xml_head_as_utf8(head: bytes) -> bytes:
    """Return the first bytes of an XML file as UTF-8, so a byte pattern can sniff its root.

    Philips PageWriter 1.04 exports are UTF-16 with a byte-order mark; a UTF-8 byte-order
    mark is dropped; anything else is returned unchanged. A UTF-16 head cut mid-character
    is decoded up to the cut.
    """
    if head[:2] in _UTF16_BOMS:
        usable = len(head) - len(head) % 2
        return head[:usable].decode("utf-16", errors="replace").encode("utf-8")
    if head.startswith(_UTF8_BOM):
        return head[len(_UTF8_BOM):]
    return head


def required(element: ElementTree.Element, path: str, source: str) -> ElementTree.Element:
    """``element.find(path)``, or RecordError ``"<source>: missing <path>"``."""
    found = element.find(path)
    if found is None:
        raise RecordError(f"{source}: missing {_readable(path)}")
    return found


def required_text(element: ElementTree.Element, path: str, source: str) -> str:
    """The stripped, non-empty text at ``path``, or RecordError naming what is missing."""
    text = (required(element, path, source).text or "").strip()
    if not text:
        raise RecordError(f"{source}: {_readable(path)} is empty")
    return text


def optional_text(element: ElementTree.Element, path: str) -> Optional[str]:
    """The stripped text at ``path``, or None when absent or empty."""
    found = element.find(path)
    text = (found.text or "").strip() if found is not None else ""
    return text or None


def parse_number(text: Optional[str], what: str, source: str) -> float:
    """``float(text)`` for a finite number, or RecordError naming ``what``."""
    try:
        value = float(text or "")
    except ValueError as exc:
        raise RecordError(f"{source}: {what} is not a number") from exc
    if not math.isfinite(value):
        raise RecordError(f"{source}: {what} is not finite")
    return value


def decode_base64(text: Optional[str], what: str, source: str) -> bytes:
    """Strictly decode base64 (whitespace ignored), or RecordError naming ``what``."""
    compact = "".join((text or "").split())
    if not compact:
        raise RecordError(f"{source}: {what} is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordError(f"{source}: {what} is not valid base64") from exc


def parse_integers(text: Optional[str], what: str, source: str,
                   max_values: int) -> np.ndarray:
    """At most ``max_values + 1`` integers separated by whitespace or commas, as float64.

    Parsing stops one number past ``max_values``, so the caller's length check refuses a
    longer text without it ever being split whole: the text is parsed about 1 MiB at a
    time, never as one Python string per number (about 60 bytes each). RecordError names
    ``what``, never a token.
    """
    text = text or ""
    chunks: List[np.ndarray] = []
    n_values = 0
    start = 0
    while start < len(text) and n_values <= max_values:
        cut = _SEPARATOR.search(text, min(start + _CHUNK_CHARS, len(text)))
        stop = cut.end() if cut else len(text)
        tokens = text[start:stop].replace(",", " ").split()[:max_values + 1 - n_values]
        try:
            # numpy parses the tokens as int() does, 2x faster than a list of Python ints
            chunks.append(np.array(tokens, dtype=np.int64))
        except (ValueError, OverflowError) as exc:
            raise RecordError(f"{source}: {what} are not all integers") from exc
        n_values += len(tokens)
        start = stop
    if not chunks:
        return np.empty(0, dtype=np.float64)
    return np.concatenate(chunks).astype(np.float64)


def _readable(path: str) -> str:
    """An ElementTree path without namespace URIs, for error messages."""
    return re.sub(r"\{[^}]*\}", "", path)
