"""The OpenAI request bodies, parsed directly (the live server is tests/test_server.py)."""

import pytest

from redrafter_mlx.serving.openai_api import ApiError, parse_json, parse_request

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_chat_and_text_bodies_with_every_field():
    request = parse_request({**CHAT, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 3,
                             "seed": -1, "stop": ["x", "y"], "stream": True,
                             "stream_options": {"include_usage": True}}, chat=True, served="m")
    assert (request.max_tokens, request.temperature, request.top_p, request.top_k) == (7, 0.5, 0.9, 3)
    assert request.seed == 2 ** 64 - 1 and request.stop == ("x", "y") and request.stream and request.include_usage
    assert request.messages == ({"role": "user", "content": "hi"},) and request.prompt is None
    text = parse_request({"model": "m", "prompt": [1, 2, 3], "max_tokens": 4}, chat=False, served="m")
    assert text.prompt == [1, 2, 3] and text.max_tokens == 4 and text.temperature is None and not text.stream


@pytest.mark.parametrize("change,param", [
    ({"temperature": "hot"}, "temperature"), ({"temperature": 3}, "temperature"), ({"top_p": -0.1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": True}, "max_tokens"), ({"stream": "yes"}, "stream"),
    ({"stop": ["a"] * 17}, "stop"), ({"messages": []}, "messages"), ({"model": "other"}, "model"),
    ({"n": 2}, "n"), ({"messages": [{"role": "user", "content": 5}]}, "messages"),
])
def test_bad_fields_name_their_parameter(change, param):
    with pytest.raises(ApiError) as error:
        parse_request({**CHAT, **change}, chat=True, served="m")
    assert error.value.status in (400, 404) and param in (error.value.param or "") + error.value.message


@pytest.mark.parametrize("raw,fragment", [(b"\xff", "not valid UTF-8"), (b"[1]", "must be a JSON object"),
                                          (b'{"a": NaN}', "could not parse"), (b"[" * 100000, "could not parse")])
def test_bodies_that_are_not_json_objects(raw, fragment):
    with pytest.raises(ApiError) as error:
        parse_json(raw)
    assert error.value.status == 400 and fragment in error.value.message
