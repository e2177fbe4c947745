"""make bench-http's own parts: reading wrk's report, and the request scripts it gives wrk."""

from __future__ import annotations

import orjson

from bench.http import BOARD, UPDATE, Scenario, Target, _lua, _parse_wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8000/graphql
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.12ms   10.01ms 180.00ms   80.00%
    Req/Sec   700.00     50.00   800.00     70.00%
  Latency Distribution
     50%  812.00us
     75%   50.00ms
     90%   60.00ms
     99%    1.20s
  6723 requests in 10.01s, 2.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:    671.63
Transfer/sec:    214.50KB
"""
TARGET = Target("http://127.0.0.1:8000", "token-1", "project-1", "task-1")


def test_wrk_reports_are_read_with_their_units_and_failures() -> None:
    result = _parse_wrk(WRK_OUTPUT)

    assert (result.requests, result.requests_per_second) == (6723, 671.63)
    assert (result.p50_ms, result.p99_ms) == (0.812, 1200.0)
    assert result.failed == 3


def test_a_fixed_request_carries_its_document_variables_and_token() -> None:
    script = _lua(Scenario("board_warm", BOARD), TARGET)

    body = script.split("wrk.body = [==[")[1].split("]==]")[0]
    assert orjson.loads(body) == {"query": BOARD, "variables": {"p": "project-1", "i": "task-1"}}
    assert 'wrk.headers["Authorization"] = "Bearer token-1"' in script


def test_a_mutation_sends_a_new_title_each_time() -> None:
    script = _lua(Scenario("update_task", UPDATE, mutation=True), TARGET)

    prefix, suffix = script.split("return wrk.format(nil, nil, nil, [==[")[1].split("]==] .. n .. [==[")
    body = prefix + "7" + suffix.split("]==])")[0]
    assert orjson.loads(body)["variables"] == {"p": "project-1", "i": "task-1", "t": "title 7"}
