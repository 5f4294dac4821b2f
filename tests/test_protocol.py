"""The pure parts: framing, client frame parsing, event schemas, rights from claims."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hub.auth import AuthError, Role, principal_from_claims
from hub.errors import ErrorCode, HubError
from hub.events import check_event
from hub.protocol import (
    Heartbeat,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_request,
    ref_of,
    websocket_text_frame,
)


def _parse_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("frame incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200000])
def test_text_frame_is_what_a_websocket_parser_reads_back(size: int) -> None:
    payload = b"a" * size
    frame = _parse_frame(websocket_text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        (
            '{"op":"subscribe","room":"location:lobby","ref":7,"since":"1-0","epoch":"e"}',
            Subscribe(7, "location:lobby", "1-0", "e", None),
        ),
        ('{"op":"subscribe","room":"r","tenant":"t"}', Subscribe(None, "r", None, None, "t")),
        ('{"op":"unsubscribe","room":"r","ref":"u"}', Unsubscribe("u", "r", None)),
        (
            '{"op":"publish","room":"r","event":"x.y","data":{"a":1},"ref":2}',
            Publish(2, "r", "x.y", {"a": 1}, None),
        ),
        ('{"op":"heartbeat","data":{"status":"ok"}}', Heartbeat(None, {"status": "ok"})),
        ('{"op":"ping","ref":3}', Ping(3)),
    ],
)
def test_each_op_parses_into_its_own_request(text: str, request_: object) -> None:
    assert parse_request(text) == request_


@pytest.mark.parametrize(
    ("text", "ref"),
    [('{"ref":4,"op":"?"}', 4), ('{"ref":true}', None), ("[1]", None), ("{", None)],
)
def test_the_ref_of_a_frame_refused_unread_is_found_when_valid(text: str, ref: object) -> None:
    assert ref_of(text) == ref


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("nope", ErrorCode.BAD_REQUEST, "frame is not valid JSON"),
        ('"x"', ErrorCode.BAD_REQUEST, "frame must be a JSON object"),
        ('{"op":"ping","ref":true}', ErrorCode.BAD_REQUEST, "ref must be an integer or a string"),
        ('{"ref":1}', ErrorCode.BAD_REQUEST, "op is required"),
        ('{"op":"dance","ref":1}', ErrorCode.NOT_FOUND, "unknown op 'dance'"),
        ('{"op":"subscribe","room":"-bad","ref":1}', ErrorCode.BAD_REQUEST, "room must match"),
        ('{"op":"subscribe","room":"' + "r" * 129 + '"}', ErrorCode.BAD_REQUEST, "room must"),
        ('{"op":"publish","room":"r","event":"Bad"}', ErrorCode.BAD_REQUEST, "event must"),
        ('{"op":"publish","room":"r","event":"' + "e" * 65 + '"}', ErrorCode.BAD_REQUEST, "event"),
        ('{"op":"heartbeat","data":[]}', ErrorCode.BAD_REQUEST, "data must be an object"),
        ('{"op":"subscribe","room":"r","since":5}', ErrorCode.BAD_REQUEST, "since must be"),
        ('{"op":"subscribe","room":"r","tenant":"a:b"}', ErrorCode.BAD_REQUEST, "tenant must"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(
    text: str, code: ErrorCode, message: str
) -> None:
    with pytest.raises(HubError) as refused:
        parse_request(text)
    assert refused.value.code is code
    assert refused.value.message.startswith(message)


def test_the_ref_survives_a_refusal() -> None:
    with pytest.raises(HubError) as refused:
        parse_request('{"op":"subscribe","room":"","ref":"r1"}')
    assert refused.value.ref == "r1"


@pytest.mark.parametrize(
    ("event", "data", "code", "field"),
    [
        ("content.update", {}, ErrorCode.BAD_REQUEST, "data.content_id"),
        ("content.update", {"content_id": 5}, ErrorCode.BAD_REQUEST, "data.content_id"),
        ("playlist.update", {"playlist_id": "p", "items": {}}, ErrorCode.BAD_REQUEST, "data.items"),
        ("command", {"name": "reboot", "args": []}, ErrorCode.BAD_REQUEST, "data.args"),
        ("alert", {"level": "loud", "message": "m"}, ErrorCode.BAD_REQUEST, "data.level"),
        ("alert", "text", ErrorCode.BAD_REQUEST, "data"),
        ("x.free", [1], ErrorCode.BAD_REQUEST, "data"),
        ("device.offline", {}, ErrorCode.FORBIDDEN, "device.offline"),
        ("no.such", {}, ErrorCode.NOT_FOUND, "unknown event"),
    ],
)
def test_events_that_do_not_fit_are_refused(
    event: str, data: object, code: ErrorCode, field: str
) -> None:
    with pytest.raises(HubError) as refused:
        check_event(event, data)
    assert refused.value.code is code
    assert field in refused.value.message


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("content.update", {"content_id": "c", "url": "https://x", "version": 3}),
        ("playlist.update", {"playlist_id": "p", "items": [{"a": 1}, "b"]}),
        ("command", {"name": "reboot", "args": {"delay": 5}}),
        ("alert", {"level": "critical", "message": "fire", "extra": True}),
        ("x.anything", {"deep": {"er": [1, None]}}),
    ],
)
def test_events_that_fit_pass(event: str, data: object) -> None:
    check_event(event, data)


def test_device_rights_are_its_own_rooms_plus_patterns_never_status() -> None:
    device = principal_from_claims(
        {"sub": "p1", "role": "device", "tenant": "acme", "loc": "l", "rooms": ["status", "x:*"]}
    )
    assert device.auto_rooms == ("device:p1", "devices", "location:l")
    assert device.may_subscribe("location:l")
    assert device.may_subscribe("x:anything")
    assert not device.may_subscribe("status")
    assert not device.may_subscribe("device:p2")
    assert not device.may_publish("devices")


def test_dashboard_without_rooms_claim_may_subscribe_to_every_room() -> None:
    dashboard = principal_from_claims({"sub": "d", "role": "dashboard", "tenant": "acme"})
    assert dashboard.may_subscribe("status")
    assert dashboard.may_subscribe("device:p9")
    limited = principal_from_claims(
        {"sub": "d", "role": "dashboard", "tenant": "acme", "rooms": ["location:*"]}
    )
    assert limited.may_subscribe("location:hall")
    assert not limited.may_subscribe("status")


def test_publish_claim_is_a_list_of_globs() -> None:
    operator = principal_from_claims(
        {"sub": "o", "role": "operator", "tenant": "acme", "publish": ["group:*", "devices"]}
    )
    assert operator.may_publish("group:g1")
    assert operator.may_publish("devices")
    assert not operator.may_publish("devices2")
    assert operator.role is Role.OPERATOR


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "p", "role": "robot", "tenant": "acme"},
        {"sub": "p", "role": "device"},
        {"role": "device", "tenant": "acme"},
        {"sub": "p", "role": "device", "tenant": "a:b"},
        {"sub": "p", "role": "device", "tenant": "acme", "groups": "g"},
        {"sub": "bad sub", "role": "device", "tenant": "acme"},
    ],
)
def test_unusable_claims_are_forbidden(claims: dict[str, object]) -> None:
    with pytest.raises(AuthError) as refused:
        principal_from_claims(claims)
    assert refused.value.status == 403


def test_admin_needs_no_tenant() -> None:
    admin = principal_from_claims({"sub": "root", "role": "admin"})
    assert admin.tenant is None


@pytest.mark.parametrize(
    "text",
    [
        '{"op":"subscribe","room":"lobby\\n"}',
        '{"op":"subscribe","room":"r","tenant":"acme\\n"}',
        '{"op":"publish","room":"r","event":"x.a\\n","data":{}}',
        '{"op":"subscribe","room":"r","since":"1-0\\n"}',
        '{"op":"subscribe","room":"r","since":"18446744073709551616-0"}',
        '{"op":"subscribe","room":"r","since":"1-18446744073709551616"}',
        '{"op":"subscribe","room":"r","since":"\\u0661-0"}',
    ],
)
def test_names_and_ids_match_whole_and_ids_fit_64_bits(text: str) -> None:
    with pytest.raises(HubError) as refused:
        parse_request(text)
    assert refused.value.code is ErrorCode.BAD_REQUEST


def test_the_largest_id_is_still_an_id() -> None:
    since = "18446744073709551615-18446744073709551615"
    request = parse_request('{"op":"subscribe","room":"r","since":"' + since + '"}')
    assert isinstance(request, Subscribe)
    assert request.since == since


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 300, 1000])
def test_data_nested_too_deep_is_refused_before_it_is_encoded(depth: int) -> None:
    text = '{"op":"publish","room":"r","event":"x.a","data":{"a":' + _nested(depth) + "}}"
    with pytest.raises(HubError) as refused:
        parse_request(text)
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert "nested deeper" in refused.value.message


def test_data_nested_within_the_bound_is_taken() -> None:
    text = '{"op":"heartbeat","data":{"status":"ok","x":' + _nested(62) + "}}"
    assert isinstance(parse_request(text), Heartbeat)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "p\n", "role": "device", "tenant": "acme"},
        {"sub": "o\x00", "role": "operator", "tenant": "acme"},
        {"sub": "x" * 257, "role": "operator", "tenant": "acme"},
        {"sub": "p", "role": "device", "tenant": "acme\n"},
        {"sub": "p", "role": "device", "tenant": "acme", "loc": "hall\n"},
    ],
)
def test_claims_with_a_trailing_newline_or_control_characters_are_forbidden(
    claims: dict[str, object],
) -> None:
    with pytest.raises(AuthError) as refused:
        principal_from_claims(claims)
    assert refused.value.status == 403
