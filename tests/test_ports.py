"""Tests for portscout.ports: nmap port syntax, the compact form, the top-ports table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.errors import PortSpecError
from portscout.ports import MAX_PORT, format_ports, parse_ports, ranked_ports, top_ports

# --- parse_ports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("22", (22,)),
        ("22,80,443", (22, 80, 443)),
        ("443,22,80,22", (22, 80, 443)),
        (" 22 , 80 ,\t443 ", (22, 80, 443)),
        ("8000-8003", (8000, 8001, 8002, 8003)),
        ("5-7,6-9", (5, 6, 7, 8, 9)),
        ("7-7", (7,)),
        ("-3", (1, 2, 3)),
        ("65533-", (65533, 65534, 65535)),
        ("0", (0,)),
        ("0-2", (0, 1, 2)),
        ("T:22,80", (22, 80)),
        ("21,T:22-23", (21, 22, 23)),
        ("T: 22", (22,)),
        ("065535", (65535,)),
    ],
)
def test_parse_ports(spec: str, expected: tuple[int, ...]) -> None:
    assert parse_ports(spec) == expected


def test_dash_alone_is_every_port_but_zero() -> None:
    assert parse_ports("-") == tuple(range(1, 65536))
    assert parse_ports("0-") == tuple(range(65536))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty port specification"),
        ("  ", "empty port specification"),
        ("90-80", "invalid port range '90-80'"),
        ("22, 90-80", "invalid port range '90-80'"),
        ("70000", "port '70000' out of range 0-65535"),
        ("1-70000", "port '70000' out of range 0-65535"),
        ("65536-", "port '65536' out of range 0-65535"),
        ("9" * 5000, f"port '{'9' * 20}...' out of range 0-65535"),
        ("22,,80", "empty item in port specification '22,,80'"),
        ("22,", "empty item in port specification '22,'"),
        ("nosuchservice", "unknown service name 'nosuchservice'"),
        ("2x", "invalid port '2x'"),
        ("22-80-90", "invalid port '22-80-90'"),
        ("2 2", "invalid port '2 2'"),
        ("-22-", "invalid port '-22-'"),
        ("[1-1024]", "invalid port '[1-1024]'"),
        ("+22", "invalid port '+22'"),
        ("\N{ARABIC-INDIC DIGIT TWO}", "invalid port '\N{ARABIC-INDIC DIGIT TWO}'"),
        ("U:53", "UDP ports are not supported yet: 'U:53'"),
        ("T:22,U:53", "UDP ports are not supported yet: 'U:53'"),
        ("S:80", "SCTP ports are not supported yet: 'S:80'"),
        ("X:80", "invalid port 'X:80'"),
        ("t:80", "invalid port 't:80'"),
        ("T:", "no port after 'T:' in 'T:'"),
    ],
)
def test_parse_ports_errors(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_ports(spec)
    assert str(info.value) == message


# --- format_ports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([], ""),
        ([80], "80"),
        ([80, 81], "80-81"),
        ([8080, *range(1, 1001), 8080], "1-1000,8080"),
        ([0, 2, 3, 4, 65535], "0,2-4,65535"),
    ],
)
def test_format_ports(ports: list[int], expected: str) -> None:
    assert format_ports(ports) == expected


@pytest.mark.parametrize("bad", [-1, 65536])
def test_format_ports_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(PortSpecError, match=rf"^port '{bad}' out of range 0-65535$"):
        format_ports([22, bad])


_port_sets = st.sets(st.integers(0, MAX_PORT), min_size=1, max_size=200) | st.builds(
    lambda runs: {p for low, span in runs for p in range(low, min(low + span, MAX_PORT) + 1)},
    st.lists(st.tuples(st.integers(0, MAX_PORT), st.integers(0, 300)), min_size=1, max_size=8),
)


@given(_port_sets)
def test_format_then_parse_round_trips(ports: set[int]) -> None:
    text = format_ports(ports)
    assert parse_ports(text) == tuple(sorted(ports))
    assert format_ports(parse_ports(text)) == text


@given(st.lists(st.tuples(st.integers(0, MAX_PORT), st.integers(0, MAX_PORT)), min_size=1))
def test_parse_agrees_with_a_set_of_ranges(ranges: list[tuple[int, int]]) -> None:
    ranges = [(min(a, b), max(a, b)) for a, b in ranges]
    spec = ",".join(f"{a}-{b}" for a, b in ranges)
    expected = sorted({p for a, b in ranges for p in range(a, b + 1)})
    assert parse_ports(spec) == tuple(expected)


# --- top_ports ------------------------------------------------------------------------------

# The 20 most commonly open TCP ports, in rank order: nmap book, "Port Scanning Basics",
# table "Top 20 (most commonly open) TCP ports" (https://nmap.org/book/port-scanning.html).
NMAP_BOOK_TOP_20 = (80, 23, 443, 21, 22, 25, 3389, 110, 445, 139,
                    143, 53, 135, 3306, 8080, 1723, 111, 995, 993, 5900)  # fmt: skip

# nmap's default TCP port list as nmap 7.80 writes it in XML (<scaninfo services="...">) for
# a scan without -p; nmap 7.93 (whose nmap-services we ship) has the same list. Later
# nmap-services revisions swap 3007 and 3013 for 5985 and 5986.
NMAP_DEFAULT_SERVICES = (
    "1,3-4,6-7,9,13,17,19-26,30,32-33,37,42-43,49,53,70,79-85,88-90,99-100,106,109-111,113,"
    "119,125,135,139,143-144,146,161,163,179,199,211-212,222,254-256,259,264,280,301,306,311,"
    "340,366,389,406-407,416-417,425,427,443-445,458,464-465,481,497,500,512-515,524,541,"
    "543-545,548,554-555,563,587,593,616-617,625,631,636,646,648,666-668,683,687,691,700,705,"
    "711,714,720,722,726,749,765,777,783,787,800-801,808,843,873,880,888,898,900-903,911-912,"
    "981,987,990,992-993,995,999-1002,1007,1009-1011,1021-1100,1102,1104-1108,1110-1114,1117,"
    "1119,1121-1124,1126,1130-1132,1137-1138,1141,1145,1147-1149,1151-1152,1154,1163-1166,"
    "1169,1174-1175,1183,1185-1187,1192,1198-1199,1201,1213,1216-1218,1233-1234,1236,1244,"
    "1247-1248,1259,1271-1272,1277,1287,1296,1300-1301,1309-1311,1322,1328,1334,1352,1417,"
    "1433-1434,1443,1455,1461,1494,1500-1501,1503,1521,1524,1533,1556,1580,1583,1594,1600,"
    "1641,1658,1666,1687-1688,1700,1717-1721,1723,1755,1761,1782-1783,1801,1805,1812,"
    "1839-1840,1862-1864,1875,1900,1914,1935,1947,1971-1972,1974,1984,1998-2010,2013,"
    "2020-2022,2030,2033-2035,2038,2040-2043,2045-2049,2065,2068,2099-2100,2103,2105-2107,"
    "2111,2119,2121,2126,2135,2144,2160-2161,2170,2179,2190-2191,2196,2200,2222,2251,2260,"
    "2288,2301,2323,2366,2381-2383,2393-2394,2399,2401,2492,2500,2522,2525,2557,2601-2602,"
    "2604-2605,2607-2608,2638,2701-2702,2710,2717-2718,2725,2800,2809,2811,2869,2875,"
    "2909-2910,2920,2967-2968,2998,3000-3001,3003,3005-3007,3011,3013,3017,3030-3031,3052,"
    "3071,3077,3128,3168,3211,3221,3260-3261,3268-3269,3283,3300-3301,3306,3322-3325,3333,"
    "3351,3367,3369-3372,3389-3390,3404,3476,3493,3517,3527,3546,3551,3580,3659,3689-3690,"
    "3703,3737,3766,3784,3800-3801,3809,3814,3826-3828,3851,3869,3871,3878,3880,3889,3905,"
    "3914,3918,3920,3945,3971,3986,3995,3998,4000-4006,4045,4111,4125-4126,4129,4224,4242,"
    "4279,4321,4343,4443-4446,4449,4550,4567,4662,4848,4899-4900,4998,5000-5004,5009,5030,"
    "5033,5050-5051,5054,5060-5061,5080,5087,5100-5102,5120,5190,5200,5214,5221-5222,"
    "5225-5226,5269,5280,5298,5357,5405,5414,5431-5432,5440,5500,5510,5544,5550,5555,5560,"
    "5566,5631,5633,5666,5678-5679,5718,5730,5800-5802,5810-5811,5815,5822,5825,5850,5859,"
    "5862,5877,5900-5904,5906-5907,5910-5911,5915,5922,5925,5950,5952,5959-5963,5987-5989,"
    "5998-6007,6009,6025,6059,6100-6101,6106,6112,6123,6129,6156,6346,6389,6502,6510,6543,"
    "6547,6565-6567,6580,6646,6666-6669,6689,6692,6699,6779,6788-6789,6792,6839,6881,6901,"
    "6969,7000-7002,7004,7007,7019,7025,7070,7100,7103,7106,7200-7201,7402,7435,7443,7496,"
    "7512,7625,7627,7676,7741,7777-7778,7800,7911,7920-7921,7937-7938,7999-8002,8007-8011,"
    "8021-8022,8031,8042,8045,8080-8090,8093,8099-8100,8180-8181,8192-8194,8200,8222,8254,"
    "8290-8292,8300,8333,8383,8400,8402,8443,8500,8600,8649,8651-8652,8654,8701,8800,8873,"
    "8888,8899,8994,9000-9003,9009-9011,9040,9050,9071,9080-9081,9090-9091,9099-9103,"
    "9110-9111,9200,9207,9220,9290,9415,9418,9485,9500,9502-9503,9535,9575,9593-9595,9618,"
    "9666,9876-9878,9898,9900,9917,9929,9943-9944,9968,9998-10004,10009-10010,10012,"
    "10024-10025,10082,10180,10215,10243,10566,10616-10617,10621,10626,10628-10629,10778,"
    "11110-11111,11967,12000,12174,12265,12345,13456,13722,13782-13783,14000,14238,"
    "14441-14442,15000,15002-15004,15660,15742,16000-16001,16012,16016,16018,16080,16113,"
    "16992-16993,17877,17988,18040,18101,18988,19101,19283,19315,19350,19780,19801,19842,"
    "20000,20005,20031,20221-20222,20828,21571,22939,23502,24444,24800,25734-25735,26214,"
    "27000,27352-27353,27355-27356,27715,28201,30000,30718,30951,31038,31337,32768-32785,"
    "33354,33899,34571-34573,35500,38292,40193,40911,41511,42510,44176,44442-44443,44501,"
    "45100,48080,49152-49161,49163,49165,49167,49175-49176,49400,49999-50003,50006,50300,"
    "50389,50500,50636,50800,51103,51493,52673,52822,52848,52869,54045,54328,55055-55056,"
    "55555,55600,56737-56738,57294,57797,58080,60020,60443,61532,61900,62078,63331,64623,"
    "64680,65000,65129,65389"
)


def test_top_ports_follow_nmaps_ranking() -> None:
    assert ranked_ports()[:20] == NMAP_BOOK_TOP_20
    assert top_ports(20) == tuple(sorted(NMAP_BOOK_TOP_20))
    assert top_ports(1) == (80,)


def test_top_1000_is_nmaps_default_port_list() -> None:
    assert format_ports(top_ports(1000)) == NMAP_DEFAULT_SERVICES


def test_ranking_covers_every_tcp_port_once() -> None:
    ranking = ranked_ports()
    assert len(ranking) == len(set(ranking)) == 8366
    assert all(1 <= port <= MAX_PORT for port in ranking)
    assert top_ports(len(ranking)) == tuple(sorted(ranking))


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (0, "top-ports count '0' must be at least 1"),
        (-5, "top-ports count '-5' must be at least 1"),
        (8367, "top-ports count '8367' exceeds the 8366 ranked TCP ports"),
    ],
)
def test_top_ports_errors(n: int, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        top_ports(n)
    assert str(info.value) == message


_NMAP_SERVICES = Path("/usr/share/nmap/nmap-services")
_SHIPPED_ID = "$Id: nmap-services 38442 2022-08-31 22:53:46Z dmiller $"


def _nmap_ranking(text: str) -> list[int]:
    """nmap's own order (services.cc, nmap_services_init + gettoppts): file order, first
    line of a repeated port/proto wins, then a stable sort by frequency, descending."""
    seen: set[int] = set()
    rows: list[tuple[int, float]] = []
    for line in text.splitlines():
        match = re.match(r"\s*[^#\s]\S*\s+(\d+)/tcp\s+(0\.\d+)", line)
        if match and int(match[1]) not in seen:
            seen.add(int(match[1]))
            rows.append((int(match[1]), float(match[2])))
    rows.sort(key=lambda row: -row[1])
    return [port for port, _ in rows]


@pytest.mark.skipif(
    not _NMAP_SERVICES.is_file() or _SHIPPED_ID not in _NMAP_SERVICES.read_text("utf-8"),
    reason="needs the nmap-services revision the table was generated from",
)
def test_table_matches_installed_nmap_services() -> None:
    assert list(ranked_ports()) == _nmap_ranking(_NMAP_SERVICES.read_text("utf-8"))


def test_service_names_stand_for_their_ports() -> None:
    # nmap's -p ssh,http and -p 'http*' (the first name nmap-services gives each port).
    assert parse_ports("ssh,http") == (22, 80, 8008)
    assert parse_ports("T:https,22") == (22, 443)
    wild = parse_ports("http*")
    assert {80, 443, 8080} <= set(wild)
    assert parse_ports("SSH") == (22,)
