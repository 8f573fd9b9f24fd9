"""The dashboard pages in a real browser, against a real ``flowscope run`` fed over UDP.

Every test starts its own ``flowscope run`` (free ports, temporary state directory) except the
ones that share ``traffic``: one run that received generated traffic from ``flowscope replay``.
"""

from __future__ import annotations

import ipaddress
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from tests.browser.harness import Flowscope, Tab

from flowscope.tools.encode import EncoderConfig, make_encoder

pytestmark = pytest.mark.browser

PAGES = {  # page → a selector that appears once the page has shown its data
    "": "#top-tcp table",
    "reports.html": "#report-tcp table",
    "hosts.html": "#watched li[data-address]",
    "exporters.html": "#exporter-table",
}

SHARED_TOML = """
[stats]
local_networks = ["10.0.0.0/16"]
watched_hosts = ["10.0.0.7"]

[[views]]
name = "ssh"
filter = "proto tcp and dst port 22"
"""


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flowscope, int]]:
    """One run that received 20 000 generated flows (all of them counted in its 1-minute results)."""
    run = Flowscope(tmp_path_factory.mktemp("traffic"), SHARED_TOML)
    try:
        summary = run.replay("--generate", "--rate", "20000", "--count", "20000", "--seed", "7",
                             "--local-network", "10.0.0.0/16", "--local-hosts", "300")
        sent = int(summary["flows"])
        assert sent == 20_000
        run.wait_for("the 20 000 flows in the 1-minute results", lambda: run.recent_flows() == sent)
        yield run, sent
    finally:
        run.stop()


# ---------------------------------------------------------------------------- exports


def mapped(text: str) -> bytes:
    """An address as the 16-byte column value (IPv4 as IPv4-mapped IPv6)."""
    address = ipaddress.ip_address(text)
    return address.packed if address.version == 6 else b"\x00" * 10 + b"\xff\xff" + address.packed


def encode_flows(rows: list[tuple[str, str, int, int, int]], now_ms: int, domain: int = 0) -> list[bytes]:
    """IPFIX datagrams (flowscope's encoder) for rows (src, dst, dst_port, packets, bytes), TCP."""
    count = len(rows)
    columns = {
        "src_addr": np.array([mapped(r[0]) for r in rows], dtype="S16"),
        "dst_addr": np.array([mapped(r[1]) for r in rows], dtype="S16"),
        "src_port": np.full(count, 40_000, np.uint16),
        "dst_port": np.array([r[2] for r in rows], np.uint16),
        "protocol": np.full(count, 6, np.uint8),
        "tcp_flags": np.full(count, 0x1B, np.uint8),  # FIN SYN PSH ACK
        "packets": np.array([r[3] for r in rows], np.uint64),
        "bytes": np.array([r[4] for r in rows], np.uint64),
        "time_start": np.full(count, now_ms - 500, np.int64),
        "time_end": np.full(count, now_ms, np.int64),
    }
    return make_encoder("ipfix", EncoderConfig(domain=domain)).encode(columns, now_ms).datagrams


def ipfix_interface_names(names: dict[int, str], now_ms: int, domain: int = 0, sequence: int = 0) -> bytes:
    """One IPFIX message: an options template (scope ingressInterface; interfaceName, variable
    length) and one options record per interface."""
    template = struct.pack("!HHH", 300, 2, 1) + struct.pack("!HH", 10, 4) + struct.pack("!HH", 82, 0xFFFF)
    template_set = struct.pack("!HH", 3, 4 + len(template)) + template
    records = b""
    for index, name in names.items():
        encoded = name.encode()
        assert len(encoded) < 255
        records += struct.pack("!IB", index, len(encoded)) + encoded
    data_set = struct.pack("!HH", 300, 4 + len(records)) + records
    body = template_set + data_set
    return struct.pack("!HHIII", 10, 16 + len(body), now_ms // 1000, sequence, domain) + body


# ------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("page", list(PAGES))
def test_each_page_loads_without_console_errors(traffic: tuple[Flowscope, int], open_tab: Callable[..., Tab],
                                                page: str) -> None:
    run, _ = traffic
    tab = open_tab(run.url + page)
    tab.wait_live()
    tab.page.wait_for_selector(PAGES[page], timeout=10_000)
    tab.page.wait_for_timeout(1500)  # a few stream events and renders
    assert tab.page.title().startswith("flowscope")
    assert tab.page.locator("#banner").is_hidden()
    assert tab.errors == []


@pytest.mark.parametrize("page", list(PAGES))
def test_each_page_loads_without_traffic_without_console_errors(flowscope_run: Callable[..., Flowscope],
                                                                open_tab: Callable[..., Tab], page: str) -> None:
    run = flowscope_run()
    tab = open_tab(run.url + page)
    tab.wait_live()
    tab.page.wait_for_timeout(1200)
    assert tab.page.locator("#banner").is_hidden()
    empty = tab.page.locator(".empty").first
    assert empty.is_visible(), "an empty server shows an explanation, not a blank page"
    assert tab.errors == []


def test_live_chart_gains_points_within_2s_of_the_flows_being_sent(flowscope_run: Callable[..., Flowscope],
                                                                   open_tab: Callable[..., Tab]) -> None:
    run = flowscope_run()
    tab = open_tab(run.url)
    tab.wait_live()
    tab.page.wait_for_selector('#chart-flows[data-total="0"]')
    requests: list[str] = []
    tab.page.on("request", lambda request: requests.append(request.url))

    summary = run.replay("--generate", "--rate", "10000", "--count", "3000", "--seed", "3")
    sent_at = time.monotonic()
    assert summary["flows"] == 3000
    tab.page.wait_for_function("() => Number(document.querySelector('#chart-flows').dataset.nonzero) > 0",
                               timeout=2000)
    assert time.monotonic() - sent_at < 2.0
    # Every flow ends up on the chart: the sum of its windows equals what was sent.
    tab.page.wait_for_function("() => document.querySelector('#chart-flows').dataset.total === '3000'",
                               timeout=10_000)
    assert run.api("series", interval="1s", limit=1000)["points"], "the API has the same windows"
    assert sum(p["flows"] for p in run.api("series", interval="1s", limit=1000)["points"]) == 3000
    # The points came over the event stream: the page asked the API for nothing meanwhile.
    assert [url for url in requests if "/api/v1/" in url and "/api/v1/stream" not in url] == []
    assert tab.errors == []


def _table(tab: Tab, selector: str) -> list[list[int]]:
    rows: list[list[int]] = tab.page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [Number(r.dataset.key), Number(r.dataset.value)])")
    return rows


def test_top_ten_tables_equal_the_api(traffic: tuple[Flowscope, int], open_tab: Callable[..., Tab]) -> None:
    run, _ = traffic
    tab = open_tab(run.url + "reports.html")
    tab.wait_live()
    tab.page.wait_for_selector("#report-tcp tbody tr")
    start = tab.attribute("#report-tcp", "data-start")
    assert start
    for by in ("flows", "packets", "bytes"):
        tab.page.click(f'#by button[data-value="{by}"]')
        tab.page.wait_for_selector(f'#report-tcp[data-by="{by}"]')
        api = run.api("top-ports", interval="1m", time=start, by=by, n=10)
        assert api["start_ms"] == int(start)
        for protocol in ("tcp", "udp"):
            expected = [[entry["port"], entry[by]] for entry in api[protocol]]
            assert len(expected) >= 5, f"too little {protocol} traffic to compare"
            assert _table(tab, f"#report-{protocol}") == expected, (protocol, by)
    # The live page's table is the newest window's too.
    live = open_tab(run.url)
    live.wait_live()
    live.page.wait_for_selector("#top-tcp tbody tr")
    start = live.attribute("#top-tcp", "data-start")
    api = run.api("top-ports", interval="1m", time=start, by="flows", n=10)
    assert _table(live, "#top-tcp") == [[e["port"], e["flows"]] for e in api["tcp"]]
    assert _table(live, "#top-udp") == [[e["port"], e["flows"]] for e in api["udp"]]
    assert tab.errors == [] and live.errors == []


def test_reports_mark_the_open_window_provisional_then_final(flowscope_run: Callable[..., Flowscope],
                                                             open_tab: Callable[..., Tab]) -> None:
    run = flowscope_run(settings=("engine.windows=1s,5s,1m", "engine.grace=500ms"))
    run.send(encode_flows([("10.1.0.1", "192.0.2.1", 443, 10, 5000)] * 20, int(time.time() * 1000)))
    run.wait_for("a 5-second result", lambda: run.api("results", interval="5s")["count"] > 0)
    tab = open_tab(run.url + "reports.html?interval=5s")
    tab.wait_live()
    tab.page.wait_for_selector("#period .badge")
    assert tab.page.get_attribute('#interval button[aria-pressed="true"]', "data-value") == "5s"
    # The newest window closes ~5.5 s after it opened; the page follows it from provisional to final.
    tab.page.wait_for_selector("#period .badge.final", timeout=10_000)
    final_start = int(tab.attribute("#period", "data-start") or 0)
    assert run.api("report", interval="5s", time=final_start)["final"] is True
    assert tab.page.locator("#cards .card-value").first.inner_text() == "20 flows"
    href = tab.page.get_attribute('#downloads a:text-is("CSV")', "href")
    assert href is not None and "format=csv" in href
    with urllib.request.urlopen(href, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in response.headers["Content-Disposition"]
        assert ",20," in response.read().decode()  # the 20 flows of the window
    tab.page.click("#prev")  # the window before: no traffic
    tab.page.wait_for_selector(f'#period[data-start="{final_start - 5000}"]')
    assert tab.page.locator('#downloads a:text-is("CSV")').count() == 0
    assert tab.page.locator("#period .badge").inner_text() == "no data"
    tab.page.click("#latest")
    tab.page.wait_for_selector(f'#period[data-start="{final_start}"]')
    assert tab.errors == []


def test_host_lookup_shows_the_partner_count(flowscope_run: Callable[..., Flowscope],
                                             open_tab: Callable[..., Tab]) -> None:
    run = flowscope_run('[stats]\nlocal_networks = ["10.77.0.0/16"]\nwatched_hosts = ["10.77.0.1"]\n')
    host = "10.77.0.1"
    rows = [  # 6 flows sent to 5 partners on 5 ports, 3 received from 3 partners (one of them also a target)
        (host, "192.0.2.1", 443, 10, 4000), (host, "192.0.2.1", 443, 4, 800), (host, "192.0.2.2", 80, 5, 900),
        (host, "192.0.2.3", 22, 30, 6000), (host, "192.0.2.4", 53, 1, 70), (host, "192.0.2.5", 8080, 2, 300),
        ("192.0.2.4", host, 443, 8, 2000), ("198.51.100.6", host, 443, 9, 3000), ("198.51.100.7", host, 22, 3, 500),
    ]
    run.send(encode_flows(rows, int(time.time() * 1000)))
    api = run.wait_for("the host's statistics", lambda: (run.api(f"hosts/{host}", interval="1m") or {}).get("stats"))
    assert api["partners"] == 7 and api["dst_ports"] == 5 and api["sent"]["flows"] == 6

    tab = open_tab(run.url + "hosts.html")
    tab.wait_live()
    tab.page.fill("#address", host)
    tab.page.click("#lookup button[type=submit]")
    tab.page.wait_for_selector("#host-partners")
    assert tab.attribute("#host-partners", "data-value") == "7"
    assert tab.page.inner_text("#host-partners") == "7"
    assert tab.page.inner_text("#host-dst-ports") == "5"
    assert tab.page.inner_text("#host-address") == host
    assert "address=10.77.0.1" in tab.page.url  # the lookup can be shared as a link

    # Watch another local host from the page, then unwatch it.
    other = "10.77.0.2"
    tab.page.fill("#address", other)
    tab.page.click("#lookup button[type=submit]")
    tab.page.click("#watch")
    tab.page.wait_for_selector(f'#watched li[data-address="{other}"]')
    assert run.api("hosts/watched")["watched"] == [host, other]
    tab.page.wait_for_selector("#unwatch")
    tab.page.click("#unwatch")
    tab.page.wait_for_selector(f'#watched li[data-address="{other}"]', state="detached")
    assert run.api("hosts/watched")["watched"] == [host]
    assert tab.errors == []


XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">eth0'
XSS_VIEW = '<img src=x onerror="window.__xss = 3">'


def test_strings_from_exporters_and_config_render_as_text(flowscope_run: Callable[..., Flowscope],
                                                          open_tab: Callable[..., Tab]) -> None:
    toml = f"[[views]]\nname = '{XSS_VIEW}'\nfilter = \"proto tcp\"\n"
    run = flowscope_run(toml)
    now_ms = int(time.time() * 1000)
    run.send([ipfix_interface_names({3: XSS, 4: "ge-0/0/1"}, now_ms, domain=9)])
    run.send(encode_flows([("10.1.0.1", "192.0.2.1", 443, 10, 5000)], now_ms, domain=9))

    def interfaces() -> dict[str, str] | None:
        for exporter in run.api("exporters")["exporters"]:
            for domain in exporter["domains"]:
                if domain["domain"] == 9 and domain["interfaces"]:
                    found: dict[str, str] = domain["interfaces"]
                    return found
        return None

    assert run.wait_for("the interface names", interfaces) == {"3": XSS, "4": "ge-0/0/1"}
    run.send([struct.pack("!HHIII", 10, 40, now_ms // 1000, 1, 9) + b"\x01\x00\x00\x08"])  # a set cut short
    errors = run.wait_for("the decode error", lambda: run.api("exporters")["exporters"][0]["decode_errors_total"])
    tab = open_tab(run.url + "exporters.html")
    tab.page.wait_for_selector('.interfaces [data-ifindex="3"] .if-name')
    assert tab.page.inner_text('.interfaces [data-ifindex="3"] .if-name') == XSS
    assert tab.page.inner_text('tr.exporter[data-address="127.0.0.1"] .decode-errors .badge') == str(errors)
    assert tab.page.locator("#exporters img, #exporters script").count() == 0
    assert tab.page.evaluate("window.__xss") is None

    live = open_tab(run.url)
    live.wait_live()
    options = live.page.eval_on_selector_all("#view option", "options => options.map(o => o.value)")
    assert options == ["all", XSS_VIEW]
    assert live.page.locator("img").count() == 0
    assert live.page.evaluate("window.__xss") is None
    assert tab.errors == [] and live.errors == []


def test_token_from_the_address_opens_every_page(flowscope_run: Callable[..., Flowscope],
                                                 open_tab: Callable[..., Tab]) -> None:
    token = "s3cret-Token_42"
    run = flowscope_run(token=token)
    tab = open_tab(run.url + f"?token={token}")
    tab.wait_live()
    assert "token" not in tab.page.url  # the server moved it into a cookie
    for page in ("reports.html", "hosts.html", "exporters.html"):
        tab.goto(run.url + page)
        tab.wait_live()
        assert tab.page.locator("#banner").is_hidden()
    assert tab.errors == []

    stranger = open_tab()  # another browser, without the cookie
    response = stranger.page.goto(run.url + "reports.html")
    assert response is not None and response.status == 401
    assert "access token" in stranger.page.inner_text("body")
