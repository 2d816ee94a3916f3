"""Certificate fields from DER: a certificate openssl makes, and hostile bytes."""

from __future__ import annotations

import contextlib
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.services.x509 import parse_certificate


@pytest.fixture(scope="module")
def der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    where = tmp_path_factory.mktemp("cert")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-keyout", str(where / "key.pem"), "-out", str(where / "cert.der"), "-outform", "DER",
         "-subj", "/C=NL/O=Portscout Test/CN=test.example",
         "-addext", "subjectAltName=DNS:test.example,DNS:*.test.example,IP:127.0.0.1",
         "-set_serial", "7"],
        check=True, capture_output=True,
    )  # fmt: skip
    return (where / "cert.der").read_bytes()


def test_fields_of_a_real_certificate(der: bytes) -> None:
    cert = parse_certificate(der)
    assert cert.subject == "C=NL, O=Portscout Test, CN=test.example"
    assert cert.issuer == cert.subject  # self-signed
    assert cert.sans == ("DNS:test.example", "DNS:*.test.example", "IP:127.0.0.1")
    assert cert.not_before is not None
    assert cert.not_after is not None
    assert cert.not_before < cert.not_after
    assert cert.not_after.endswith("Z")


def test_truncated_certificates_raise_value_error(der: bytes) -> None:
    for cut in (0, 1, 5, 50, len(der) // 2, len(der) - 1):
        with pytest.raises(ValueError, match=r"."):
            parse_certificate(der[:cut])


@given(st.binary(max_size=300))
def test_garbage_raises_value_error_only(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_certificate(data)
