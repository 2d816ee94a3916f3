"""The certificate fields a report shows, read from DER: subject, issuer, subject
alternative names, validity. A minimal DER walk (ITU-T X.690) over RFC 5280's layout, so
that ``-sV`` needs no third-party package. Core: bytes in, a ``Certificate`` out.

::

    Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
                                  validity, subject, subjectPublicKeyInfo,
                                  [1] [2] OPTIONAL, [3] extensions OPTIONAL }

Anything malformed raises ``ValueError`` (the engine reports no certificate then): the
bytes come from a server that may be hostile, and every length is checked.
"""

from __future__ import annotations

from ipaddress import ip_address

from portscout.results import Certificate

_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
}  # fmt: skip
_SAN_OID = "2.5.29.17"
_SEQUENCE, _SET, _OID, _OCTETS = 0x30, 0x31, 0x06, 0x04
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


def _read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, contents, position after) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("DER element longer than its container")
    return tag, data[pos : pos + length], pos + length


def _children(contents: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(contents):
        tag, value, pos = _read(contents, pos)
        out.append((tag, value))
    return out


def _oid(raw: bytes) -> str:
    if not raw:
        raise ValueError("empty OID")
    parts = [raw[0] // 40, raw[0] % 40] if raw[0] < 80 else [2, raw[0] - 80]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _name(contents: bytes) -> str:
    """A Name as ``CN=example.org, O=Example`` in the certificate's own order."""
    items: list[str] = []
    for tag, rdn in _children(contents):
        if tag != _SET:
            raise ValueError("RDN is not a SET")
        for _, attribute in _children(rdn):
            (oid_tag, oid), (_, value) = _children(attribute)[:2]
            if oid_tag != _OID:
                raise ValueError("attribute without an OID")
            key = _NAMES.get(_oid(oid), _oid(oid))
            items.append(f"{key}={value.decode('utf-8', 'replace')}")
    return ", ".join(items)


def _time(tag: int, raw: bytes) -> str:
    """UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime as ``YYYY-MM-DDTHH:MM:SSZ``."""
    text = raw.decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 4.1.2.5.1
    elif tag != _GENERALIZED_TIME:
        raise ValueError("validity is not a time")
    if len(text) < 15 or not text[:14].isdigit():
        raise ValueError(f"bad time '{text}'")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}Z"


def _sans(extensions: bytes) -> tuple[str, ...]:
    for _, extension in _children(extensions):
        parts = _children(extension)
        if parts[0][0] == _OID and _oid(parts[0][1]) == _SAN_OID:
            _, names, _ = _read(parts[-1][1], 0)  # extnValue: OCTET STRING around the SEQUENCE
            return tuple(_general_name(tag, value) for tag, value in _children(names))
    return ()


def _general_name(tag: int, value: bytes) -> str:
    kind = tag & 0x1F
    if kind == 2:
        return "DNS:" + value.decode("ascii", "replace")
    if kind == 7 and len(value) in (4, 16):
        return "IP:" + str(ip_address(value))
    if kind == 1:
        return "email:" + value.decode("ascii", "replace")
    if kind == 6:
        return "URI:" + value.decode("ascii", "replace")
    return f"other[{kind}]"


def parse_certificate(der: bytes) -> Certificate:
    """Subject, issuer, SANs and validity of a DER certificate; ValueError if malformed."""
    try:
        return _parse(der)
    except IndexError as exc:  # a SEQUENCE with fewer elements than RFC 5280 says
        raise ValueError(f"malformed certificate: {exc}") from exc


def _parse(der: bytes) -> Certificate:
    tag, certificate, _ = _read(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("not a DER certificate")
    tbs_tag, tbs, _ = _read(certificate, 0)
    if tbs_tag != _SEQUENCE:
        raise ValueError("no TBSCertificate")
    fields = _children(tbs)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    if len(fields) < 6:
        raise ValueError("TBSCertificate too short")
    issuer, validity, subject = fields[2][1], fields[3][1], fields[4][1]
    (before_tag, before), (after_tag, after) = _children(validity)[:2]
    extensions = next((value for tag, value in fields[6:] if tag == 0xA3), None)
    sans = _sans(_read(extensions, 0)[1]) if extensions else ()
    return Certificate(
        subject=_name(subject),
        issuer=_name(issuer),
        sans=sans,
        not_before=_time(before_tag, before),
        not_after=_time(after_tag, after),
    )
