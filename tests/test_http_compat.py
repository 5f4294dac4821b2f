"""hub/http.py subclasses uvicorn's private httptools protocol: what it relies on is there."""

from __future__ import annotations

import inspect

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.http import HubHttpProtocol

OVERRIDDEN = {
    "__init__",
    "connection_made",
    "on_message_begin",
    "on_headers_complete",
    "on_response_complete",
    "connection_lost",
    "data_received",
}


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_method_is_still_there_with_the_same_arguments(name: str) -> None:
    theirs = getattr(HttpToolsProtocol, name, None)
    assert callable(theirs), f"uvicorn's HttpToolsProtocol no longer has `{name}` (hub/http.py)"
    ours = getattr(HubHttpProtocol, name)
    if name != "__init__":
        assert list(inspect.signature(theirs).parameters) == list(
            inspect.signature(ours).parameters
        ), f"HttpToolsProtocol.{name} changed its arguments (hub/http.py overrides it)"


def test_the_attributes_hub_uses_are_set_by_uvicorn() -> None:
    source = inspect.getsource(HttpToolsProtocol.__init__)
    for attribute in ("self.loop", "self.transport", "self.timeout_keep_alive_task"):
        assert attribute in source or attribute in inspect.getsource(HttpToolsProtocol), (
            f"uvicorn's HttpToolsProtocol no longer sets `{attribute}` (hub/http.py uses it)"
        )


def test_no_method_of_uvicorn_is_shadowed_by_one_of_hubs_own() -> None:
    own = {
        "limit",
        "_await_headers",
        "_headers_done",
        "_make_room",
        "_too_large",
        "_too_slow",
        "_refuse",
        "_linger",
    }
    for name in own:
        assert not hasattr(HttpToolsProtocol, name), f"uvicorn now has `{name}` of its own"
