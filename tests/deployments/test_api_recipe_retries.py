"""docs/api.md's Python recipe sends a request again while the server says it is busy.

A Prefect server on SQLite answers 503 when its database is locked by another
write (several runs starting and ending at once): nothing was done, and
Prefect's own client sends the request again. The recipe must too, and must
not for other errors, after which a create may have gone through.
"""

from __future__ import annotations

import time
import types

import httpx
import pytest

from tests.api_doc import doc_blocks


@pytest.fixture
def recipe(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, list[float]]:
    """The script as written in the page, loaded as a module; the sleeps it asks for."""
    (script,) = doc_blocks("With Python", "python")
    module = types.ModuleType("run_deployment")
    exec(compile(script, "run_deployment.py", "exec"), module.__dict__)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return module, slept


def _api(codes: list[int], seen: list[str]) -> httpx.Client:
    answers = iter(codes)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(next(answers), json={"id": "9b4270aa"})

    return httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(answer))


def test_a_busy_server_is_asked_again_until_it_answers(
    recipe: tuple[types.ModuleType, list[float]],
) -> None:
    module, slept = recipe
    seen: list[str] = []
    with _api([503, 429, 201], seen) as api:
        answer = module.request(api, "POST", "/deployments/d/create_flow_run", json={})
    assert answer.status_code == 201
    assert seen == ["POST /api/deployments/d/create_flow_run"] * 3
    assert slept == [1, 2]


def test_a_server_busy_for_long_gets_its_last_answer_returned(
    recipe: tuple[types.ModuleType, list[float]],
) -> None:
    module, slept = recipe
    seen: list[str] = []
    with _api([503] * 6, seen) as api:
        answer = module.request(api, "GET", "/flow_runs/x")
    assert answer.status_code == 503
    assert len(seen) == 6
    assert slept == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("code", [500, 502, 504, 409])
def test_other_errors_are_not_sent_again(
    recipe: tuple[types.ModuleType, list[float]], code: int
) -> None:
    """After a 500 or a proxy's 502/504 a create may have gone through: not again."""
    module, slept = recipe
    seen: list[str] = []
    with _api([code, 201], seen) as api:
        answer = module.request(api, "POST", "/deployments/d/create_flow_run", json={})
    assert answer.status_code == code
    assert len(seen) == 1
    assert slept == []
