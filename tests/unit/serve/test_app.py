"""The JSON API over a real store and engine: every endpoint, its values, its bad parameters."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.unit.serve.world import T0, World

from flowscope import __version__
from flowscope.serve.app import build_app
from support.flows import make_batch

API = "/api/v1"
ZERO = {"flows": 0, "packets": 0, "bytes": 0}
SECOND_0 = {"flows": 14, "packets": 125, "bytes": 21_404}
SECOND_1 = {"flows": 3, "packets": 11, "bytes": 1_480}
PROTOCOLS_0 = {"tcp": {"flows": 9, "packets": 120, "bytes": 21_000}, "udp": {"flows": 4, "packets": 4, "bytes": 320},
               "icmp": {"flows": 1, "packets": 1, "bytes": 84}, "other": ZERO}
PROTOCOLS_1 = {"tcp": {"flows": 2, "packets": 10, "bytes": 1_400}, "udp": {"flows": 1, "packets": 1, "bytes": 80},
               "icmp": ZERO, "other": ZERO}


def get(client: TestClient, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def metrics(entry: dict[str, Any]) -> dict[str, int]:
    return {k: entry[k] for k in ("flows", "packets", "bytes")}


# ------------------------------------------------------------------------------ meta


def test_health_and_version(world: World) -> None:
    world.now_ms = T0 + 5_000
    health = get(world.client, f"{API}/health")
    assert health == {"status": "ok", "version": __version__, "time_ms": T0 + 5_000,
                      "time": "2026-11-27T13:00:05.000Z", "started_ms": T0, "started": "2026-11-27T13:00:00.000Z",
                      "uptime_ms": 5_000, "subscribers": 0}
    assert get(world.client, f"{API}/version") == {"version": __version__, "api": "v1"}


def test_config_describes_intervals_views_and_settings(client: TestClient) -> None:
    config = get(client, f"{API}/config")
    assert config["intervals"] == [
        {"name": "1s", "duration_ms": 1_000, "retention_ms": 86_400_000},
        {"name": "1m", "duration_ms": 60_000, "retention_ms": 30 * 86_400_000},
        {"name": "1h", "duration_ms": 3_600_000, "retention_ms": 365 * 86_400_000},
    ]
    assert (config["live_interval"], config["report_interval"]) == ("1s", "1m")
    assert config["views"] == [{"name": "all", "filter": None}, {"name": "ssh", "filter": "proto tcp and dst port 22"}]
    assert config["top_n"] == 10 and config["port_side"] == "dst"
    assert config["web"] == {"tcp_ports": [80, 443, 8080, 8443], "udp_ports": [443]}
    assert config["local_networks"] == ["10.0.0.0/8"] and config["watched_hosts"] == ["10.0.0.1"]
    assert (config["time_base"], config["grace_ms"], config["provisional_interval_ms"]) == ("received", 1_000, 0)
    assert config["auth"] is False
    assert config["stream"] == {"heartbeat_ms": 200, "queue_events": 64}


def test_views(client: TestClient) -> None:
    assert get(client, f"{API}/views") == {"views": [{"name": "all", "filter": None},
                                                     {"name": "ssh", "filter": "proto tcp and dst port 22"}]}


# --------------------------------------------------------------------------- results


def test_results_of_a_range(client: TestClient) -> None:
    body = get(client, f"{API}/results?interval=1s")
    assert (body["interval"], body["view"], body["from_ms"], body["to_ms"], body["count"]) == ("1s", "all", None,
                                                                                               None, 2)
    first, second = body["results"]
    assert (first["start_ms"], first["end_ms"], first["final"]) == (T0, T0 + 1_000, True)
    assert (first["start"], first["end"]) == ("2026-11-27T13:00:00.000Z", "2026-11-27T13:00:01.000Z")
    assert metrics(first["totals"]) == SECOND_0 and first["totals"]["by_protocol"] == PROTOCOLS_0
    assert metrics(second["totals"]) == SECOND_1 and second["totals"]["by_protocol"] == PROTOCOLS_1
    assert first["totals"]["by_exporter"] == [{"exporter": "192.0.2.1", "domain": 5, **SECOND_0}]

    def flows(url: str) -> list[int]:
        return [r["totals"]["flows"] for r in get(client, url)["results"]]

    assert flows(f"{API}/results?interval=1s&from={T0 + 1_000}") == [3]
    assert flows(f"{API}/results?interval=1s&to={T0 + 1_000}") == [14]
    assert flows(f"{API}/results?interval=1s&from=2026-11-27T13:00:00Z&to=2026-11-27T13:00:02Z") == [14, 3]
    assert flows(f"{API}/results?interval=1s&from=-2s") == [3]  # now is T0 + 3 s: windows from T0 + 1 s
    assert flows(f"{API}/results?interval=1s&limit=1") == [3]  # the newest of the range
    assert flows(f"{API}/results?interval=1s&view=ssh") == [3, 0]
    assert flows(f"{API}/results?interval=1m") == [17]  # provisional: the minute is open
    assert flows(f"{API}/results?interval=1m&final=true") == []


def test_results_as_csv(client: TestClient) -> None:
    response = client.get(f"{API}/results?interval=1s&format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == \
        'attachment; filename="flowscope-results-all-1s-20261127T130000Z.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["start_ms"], r["start"], r["final"], r["flows"], r["packets"], r["bytes"]) for r in rows] == [
        (str(T0), "2026-11-27T13:00:00.000Z", "true", "14", "125", "21404"),
        (str(T0 + 1_000), "2026-11-27T13:00:01.000Z", "true", "3", "11", "1480"),
    ]
    assert (rows[0]["tcp_flows"], rows[0]["udp_bytes"], rows[0]["icmp_packets"], rows[0]["web_flows"]) == \
        ("9", "320", "1", "6")
    json_download = client.get(f"{API}/results?interval=1s&download=true")
    assert json_download.headers["content-disposition"] == \
        'attachment; filename="flowscope-results-all-1s-20261127T130000Z.json"'
    assert "content-disposition" not in client.get(f"{API}/results?interval=1s").headers


def test_latest_and_report_by_time(world: World) -> None:
    client = world.client
    minute = get(client, f"{API}/results/latest?interval=1m")
    assert (minute["start_ms"], minute["final"], metrics(minute["totals"])) == (
        T0, False, {"flows": 17, "packets": 136, "bytes": 22_884})
    missing = get(client, f"{API}/results/latest?interval=1m&final=true", 404)
    assert missing == {"error": "not_found", "message": "no final 1m result for view 'all' yet"}
    world.at(T0 + 61_000)  # the minute closes
    assert get(client, f"{API}/results/latest?interval=1m&final=true")["final"] is True
    assert get(client, f"{API}/report?interval=1s&time={T0 + 1_500}")["totals"]["flows"] == 3
    assert get(client, f"{API}/report?interval=1s&time=2026-11-27T13:00:00.5Z")["totals"]["flows"] == 14
    assert get(client, f"{API}/report?interval=1s")["start_ms"] == T0 + 1_000  # newest
    gap = get(client, f"{API}/report?interval=1s&time={T0 + 5_000}", 404)
    assert gap["message"] == "no 1s result for view 'all' for the window starting 2026-11-27T13:00:05.000Z"
    assert get(client, f"{API}/report?interval=1s&time={T0}&view=ssh")["totals"]["flows"] == 3


def test_report_as_csv_long_table(client: TestClient) -> None:
    response = client.get(f"{API}/report?interval=1m&format=csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == \
        'attachment; filename="flowscope-report-all-1m-20261127T130000Z.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["final"] for r in rows} == {"false"}

    def pick(section: str, group: str = "") -> list[tuple[str, str, str, str, str]]:
        return [(r["rank"], r["key"], r["flows"], r["packets"], r["bytes"]) for r in rows
                if r["section"] == section and r["group"] == group]

    assert pick("totals") == [("", "all", "17", "136", "22884")]
    assert pick("protocol") == [("", "tcp", "11", "130", "22400"), ("", "udp", "5", "5", "400"),
                                ("", "icmp", "1", "1", "84"), ("", "other", "0", "0", "0")]
    assert pick("exporter", "5") == [("", "192.0.2.1", "17", "136", "22884")]
    assert pick("top_ports", "tcp_by_flows") == [("1", "443", "6", "60", "9000"), ("2", "22", "3", "60", "12000"),
                                                 ("3", "80", "2", "10", "1400")]
    assert pick("top_ports", "udp_by_bytes") == [("1", "53", "5", "5", "400")]
    assert pick("web") == [("", "all", "8", "70", "10400")]
    assert pick("web_servers", "by_flows") == [("1", "203.0.113.5", "8", "70", "10400")]
    assert pick("web_clients", "by_bytes") == [("1", "10.0.0.1", "6", "60", "9000"),
                                               ("2", "10.0.0.2", "2", "10", "1400")]
    assert pick("late") == [("", "flows", "0", "0", "0")]
    as_json = client.get(f"{API}/report?interval=1m&download=true")
    assert as_json.headers["content-disposition"] == \
        'attachment; filename="flowscope-report-all-1m-20261127T130000Z.json"'
    assert as_json.json()["totals"]["flows"] == 17


def test_series_points(world: World) -> None:
    body = get(world.client, f"{API}/series")  # default: the live interval
    assert (body["interval"], body["view"], body["count"]) == ("1s", "all", 2)
    first, second = body["points"]
    assert first == {"start_ms": T0, "start": "2026-11-27T13:00:00.000Z", "end_ms": T0 + 1_000, "final": True,
                     **SECOND_0, "by_protocol": PROTOCOLS_0, "web": {"flows": 6, "packets": 60, "bytes": 9_000},
                     "late_flows": 0}
    assert metrics(second) == SECOND_1 and second["by_protocol"] == PROTOCOLS_1


def test_series_filled_with_zero_windows(world: World) -> None:
    body = get(world.client, f"{API}/series?interval=1s&from={T0 - 2_000}&to={T0 + 5_000}&fill=true")
    points = body["points"]
    # up to the window open now (T0 + 3 s): the future is not filled
    assert [p["start_ms"] - T0 for p in points] == [-2_000, -1_000, 0, 1_000, 2_000, 3_000]
    assert [p["flows"] for p in points] == [0, 0, 14, 3, 0, 0]
    assert [p.get("filled", False) for p in points] == [True, True, False, False, True, True]
    # a window without traffic is final once its end plus the grace period has passed
    assert [p["final"] for p in points] == [True, True, True, True, False, False]
    limited = get(world.client, f"{API}/series?interval=1s&from={T0 - 2_000}&to={T0 + 5_000}&fill=true&limit=3")
    assert [p["start_ms"] - T0 for p in limited["points"]] == [1_000, 2_000, 3_000]


def test_series_as_csv(client: TestClient) -> None:
    response = client.get(f"{API}/series?interval=1s&format=csv&view=ssh")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["view"], r["flows"], r["bytes"], r["tcp_flows"]) for r in rows] == [("ssh", "3", "12000", "3"),
                                                                                  ("ssh", "0", "0", "0")]
    assert response.headers["content-disposition"].endswith('filename="flowscope-series-ssh-1s-20261127T130000Z.csv"')


def test_top_ports(client: TestClient) -> None:
    body = get(client, f"{API}/top-ports")  # default: the report interval, newest window
    assert (body["interval"], body["start_ms"], body["final"], body["by"]) == ("1m", T0, False, "flows")
    assert body["tcp"] == [{"port": 443, "flows": 6, "packets": 60, "bytes": 9_000},
                           {"port": 22, "flows": 3, "packets": 60, "bytes": 12_000},
                           {"port": 80, "flows": 2, "packets": 10, "bytes": 1_400}]
    assert body["udp"] == [{"port": 53, "flows": 5, "packets": 5, "bytes": 400}]
    by_packets = get(client, f"{API}/top-ports?by=packets&protocol=tcp&n=2")
    assert [p["port"] for p in by_packets["tcp"]] == [22, 443]  # a tie goes to the lower port
    assert "udp" not in by_packets
    assert [p["port"] for p in get(client, f"{API}/top-ports?by=bytes&protocol=tcp")["tcp"]] == [22, 443, 80]
    assert get(client, f"{API}/top-ports?interval=1s&time={T0}&protocol=udp")["udp"] == [
        {"port": 53, "flows": 4, "packets": 4, "bytes": 320}]


def test_web_traffic(client: TestClient) -> None:
    body = get(client, f"{API}/web?interval=1m")
    assert metrics(body) == {"flows": 8, "packets": 70, "bytes": 10_400}
    assert body["top_servers"] == [{"address": "203.0.113.5", "flows": 8, "packets": 70, "bytes": 10_400}]
    assert body["top_clients"] == [{"address": "10.0.0.1", "flows": 6, "packets": 60, "bytes": 9_000},
                                   {"address": "10.0.0.2", "flows": 2, "packets": 10, "bytes": 1_400}]
    assert get(client, f"{API}/web?n=1&by=bytes")["top_clients"] == [
        {"address": "10.0.0.1", "flows": 6, "packets": 60, "bytes": 9_000}]


def test_late_flows_and_metrics_endpoint(world: World) -> None:
    world.feed(make_batch(2, time_received=T0 + 500, protocol=6, dst_port=443, packets=1, bytes=60))  # second 0 closed
    world.at(T0 + 3_500)
    late = get(world.client, f"{API}/report?interval=1s&time={T0 + 3_000}")
    assert (late["late_flows"], late["totals"]["flows"]) == (2, 2)
    response = world.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = response.text.splitlines()
    assert "flowscope_engine_late_flows_total 2" in lines
    assert "flowscope_engine_flows_total 19" in lines
    assert 'flowscope_engine_windows_closed_total{resolution="1s"} 2' in lines
    assert 'flowscope_exporter_flows_total{domain="5",exporter="192.0.2.1"} 17' in lines
    assert 'flowscope_exporter_bytes_total{domain="5",exporter="192.0.2.1"} 22884' in lines
    assert 'flowscope_open_windows{interval="1s"} 1' in lines  # the second of the late flows
    assert 'flowscope_window_lag_seconds{interval="1s"} 0.0' in lines
    assert "# TYPE flowscope_engine_late_flows_total counter" in lines
    assert "# TYPE flowscope_window_lag_seconds gauge" in lines
    assert "flowscope_stream_subscribers 0" in lines
    assert f'flowscope_build_info{{version="{__version__}"}} 1' in lines


# ------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    ("GET", f"{API}/results?interval=5m", "interval"),
    ("GET", f"{API}/results?interval=1m&view=nope", "view"),
    ("GET", f"{API}/results?from=yesterday", "from"),
    ("GET", f"{API}/results?from=-1m&to=-2m", "to"),
    ("GET", f"{API}/results?from=99999999999999999999", "from"),
    ("GET", f"{API}/results?from=1795784400000.5", "from"),
    ("GET", f"{API}/results?to=10000-01-01", "to"),
    ("GET", f"{API}/results?from=-99999999999d", "from"),
    ("GET", f"{API}/results?limit=0", "limit"),
    ("GET", f"{API}/results?limit=abc", "limit"),
    ("GET", f"{API}/results?limit=10001", "limit"),
    ("GET", f"{API}/results?limit=1e3", "limit"),
    ("GET", f"{API}/results?final=maybe", "final"),
    ("GET", f"{API}/results?format=xml", "format"),
    ("GET", f"{API}/results?interval=1m&interval=1s", "interval"),
    ("GET", f"{API}/results?bogus=1", "bogus"),
    ("GET", f"{API}/results/latest?view=%3Cscript%3E", "view"),
    ("GET", f"{API}/results/latest?final=2", "final"),
    ("GET", f"{API}/report?time=13:00", "time"),
    ("GET", f"{API}/report?download=please", "download"),
    ("GET", f"{API}/report?format=pdf", "format"),
    ("GET", f"{API}/series?fill=perhaps", "fill"),
    ("GET", f"{API}/series?interval=10s", "interval"),
    ("GET", f"{API}/series?limit=100000", "limit"),
    ("GET", f"{API}/top-ports?by=octets", "by"),
    ("GET", f"{API}/top-ports?n=0", "n"),
    ("GET", f"{API}/top-ports?protocol=icmp", "protocol"),
    ("GET", f"{API}/web?by=x", "by"),
    ("GET", f"{API}/web?n=99999", "n"),
    ("GET", f"{API}/exporters?x=1", "x"),
    ("GET", f"{API}/health?verbose=1", "verbose"),
    ("GET", f"{API}/version?x=1", "x"),
    ("GET", f"{API}/config?view=all", "view"),
    ("GET", f"{API}/views?x=", "x"),
    ("GET", f"{API}/hosts?interval=2m", "interval"),
    ("GET", f"{API}/hosts?time=later", "time"),
    ("GET", f"{API}/hosts/watched?x=1", "x"),
    ("GET", f"{API}/hosts/999.1.1.1", "address"),
    ("GET", f"{API}/hosts/fe80::1%25eth0", "address"),
    ("GET", f"{API}/hosts/10.0.0.1?time=soon", "time"),
    ("GET", f"{API}/hosts/10.0.0.1/series?limit=-1", "limit"),
    ("GET", f"{API}/hosts/10.0.0.1/series?from=x", "from"),
    ("DELETE", f"{API}/hosts/watched/not-an-address", "address"),
    ("GET", f"{API}/stream?interval=1s,,1m", "interval"),
    ("GET", f"{API}/stream?interval=2s", "interval"),
    ("GET", f"{API}/stream?compact=maybe", "compact"),
    ("GET", f"{API}/stream?view=nope", "view"),
    ("GET", "/metrics?x=1", "x"),
    ("GET", f"{API}/openapi.json?x=1", "x"),
]


@pytest.mark.parametrize(("method", "url", "parameter"), BAD_REQUESTS)
def test_bad_parameters_are_named_in_a_400(client: TestClient, method: str, url: str, parameter: str) -> None:
    response = client.request(method, url)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_parameter" and body["parameter"] == parameter
    assert body["message"].startswith(f"{parameter}: ")


def test_every_endpoint_is_in_the_bad_input_table(client: TestClient) -> None:
    tested = [(method, url.split("?")[0]) for method, url, _ in BAD_REQUESTS]
    for path, operations in client.app.state.openapi["paths"].items():  # type: ignore[attr-defined]
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method in operations:
            if (method, path) == ("post", f"{API}/hosts/watched"):
                continue  # its body errors are in test_hosts
            assert any(m == method.upper() and pattern.match(p) for m, p in tested), (method, path)


def test_messages_say_what_is_expected(client: TestClient) -> None:
    assert get(client, f"{API}/results?interval=5m", 400)["message"] == \
        "interval: '5m' is not a configured interval; one of: 1s, 1m, 1h"
    assert get(client, f"{API}/results?bogus=1", 400)["message"] == \
        "bogus: unknown parameter (this endpoint takes: download, final, format, from, interval, limit, to, view)"
    assert get(client, f"{API}/results?limit=0", 400)["message"] == "limit: 0 is below the minimum 1"
    to_before = get(client, f"{API}/results?from={T0}&to={T0 - 1}", 400)
    assert to_before["message"] == "to: 2026-11-27T12:59:59.999Z is before from (2026-11-27T13:00:00.000Z)"


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert get(client, f"{API}/nothing", 404) == {
        "error": "not_found", "message": f"no such endpoint: {API}/nothing (see {API}/openapi.json)"}
    response = client.post(f"{API}/results")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"] == "method_not_allowed"
    assert client.put(f"{API}/hosts/watched").status_code == 405
    assert client.get("/nothing-here").status_code == 404


def test_empty_store_answers_404_not_500(empty_world: World) -> None:
    client = empty_world.client
    for path in ("results/latest", "report", "top-ports", "web"):
        assert client.get(f"{API}/{path}").status_code == 404
    assert get(client, f"{API}/results")["results"] == []
    assert get(client, f"{API}/series?fill=true")["points"] == []
    assert get(client, f"{API}/exporters")["exporters"] == []
    assert client.get("/metrics").status_code == 200


def test_empty_value_means_the_default(client: TestClient) -> None:
    assert get(client, f"{API}/results?interval=&view=&from=")["interval"] == "1m"


# ----------------------------------------------------------------------------- pages


def test_index_placeholder_then_static_pages(world: World) -> None:
    page = world.client.get("/")
    assert page.status_code == 200 and "The dashboard pages are not installed" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    api = world.client.get(f"{API}/health")
    assert "content-security-policy" not in api.headers
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["cache-control"] == "no-store"
    static = world.dashboard.static_dir
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>live</title>")
    (static / "app.js").write_text("console.log('flowscope')")
    client = TestClient(build_app(world.dashboard))  # the static folder is mounted when the app is built
    assert client.get("/").text == "<!doctype html><title>live</title>"
    script = client.get("/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/missing.js").status_code == 404
