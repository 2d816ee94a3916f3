"""The library as a Python user meets it: portscout.scan/iscan/ascan, Report, dir(), help()."""

from __future__ import annotations

import inspect
from ipaddress import ip_address

import pytest

import portscout
from portscout import OptionError, Reason, Report, Result, State
from portscout.api import _config
from portscout.scanner import ScanConfig
from portscout.timing import TimingPolicy
from tests.engines.conftest import serve


def test_dir_shows_the_api_and_hides_imports() -> None:
    names = dir(portscout)
    assert {"scan", "iscan", "ascan", "Report", "Result", "State"} <= set(names)
    assert "TYPE_CHECKING" not in names
    assert "typing" not in names
    for name in portscout.__all__:
        assert getattr(portscout, name) is not None


@pytest.mark.parametrize("name", ["scan", "iscan", "ascan"])
def test_docstrings_name_every_option(name: str) -> None:
    doc = inspect.getdoc(getattr(portscout, name)) or ""
    for option in ("top_ports", "excludes", "engine", "timing", "timeout", "max_retries",
                   "max_rate", "max_in_flight", "workers", "processes", "key", "randomize",
                   "discovery", "ping_only", "keep_closed"):  # fmt: skip
        assert f"``{option}``" in doc, option


@pytest.mark.parametrize(
    ("ports", "expected"),
    [(22, (22,)), ([22, 80], (22, 80)), (range(20, 23), (20, 21, 22)), ("22,80", "22,80")],
)
def test_ports_as_int_ints_or_port_syntax(ports: object, expected: object) -> None:
    assert _config("127.0.0.1", ports, {}).ports == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [22.5, ["22"], True])
def test_bad_ports_are_refused_in_one_line(bad: object) -> None:
    with pytest.raises(OptionError, match="invalid port"):
        _config("127.0.0.1", bad, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("timing", [4, "4", "aggressive", "T4", "AGGRESSIVE"])
def test_timing_as_nmap_template_number_or_name(timing: object) -> None:
    config = _config("127.0.0.1", 22, {"timing": timing})
    assert config.timing == TimingPolicy.template(4)


def test_max_rate_is_the_library_name_and_rate_is_deprecated() -> None:
    assert _config("127.0.0.1", 22, {"max_rate": 500.0}).rate == 500.0
    with pytest.warns(DeprecationWarning, match="max_rate"):
        assert _config("127.0.0.1", 22, {"rate": 300.0}).rate == 300.0
    with pytest.raises(OptionError, match="unknown option 'speed'"):
        _config("127.0.0.1", 22, {"speed": 1})


def test_open_ports_takes_a_string_and_needs_the_host() -> None:
    report = Report(engine="async", key=1, started=0.0)
    for host, port in (("127.0.0.1", 22), ("::1", 80), ("127.0.0.1", 8080)):
        report.add(
            Result(host=ip_address(host), port=port, state=State.OPEN, reason=Reason.SYN_ACK)
        )
    assert report.open_ports("127.0.0.1") == [22, 8080]
    assert report.open_ports(ip_address("::1")) == [80]
    assert report.open_ports_by_host() == {
        ip_address("127.0.0.1"): [22, 8080],
        ip_address("::1"): [80],
    }
    with pytest.raises(TypeError):
        report.open_ports()  # type: ignore[call-arg]


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_scan_with_an_int_port_and_string_host_lookup() -> None:
    with serve({("127.0.0.1", 7811): "accept"}):
        report = portscout.scan("127.0.0.1", 7811, engine="async", timing=4, max_rate=10_000)
        closed = list(portscout.iscan("127.0.0.1", [7810, 7811], engine="async"))
    assert report.open_ports("127.0.0.1") == [7811]
    assert report.counts[State.OPEN] == 1
    # scan() counts closed ports (documented); iscan() yields them.
    assert sorted((r.port, r.state) for r in closed) == [(7810, State.CLOSED), (7811, State.OPEN)]


def test_scan_documents_why_closed_results_are_counted_only() -> None:
    doc = inspect.getdoc(portscout.scan) or ""
    assert "Closed ports are counted, not kept" in " ".join(doc.split())
    assert ScanConfig.__doc__
