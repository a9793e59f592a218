"""Method strings and dicts of a sweep: the latency-aware suffixes ('+auto', '+round<N>') and their names."""
import pytest

from secateurs.search.explore import method_name, parse_method


@pytest.mark.parametrize("text,expected", [
    ("channel/l2/local+auto", {"granularity": "channel", "criterion": "l2", "scope": "local", "round_to": "auto"}),
    ("channel/lamp/global+round16", {"granularity": "channel", "criterion": "lamp", "scope": "global", "round_to": 16}),
    ("channel/l2/local+auto+int8", {"granularity": "channel", "criterion": "l2", "scope": "local", "round_to": "auto",
                                    "quantize": "int8"}),
    ("head/l2/local+round2", {"granularity": "head", "criterion": "l2", "scope": "local", "round_to": 2}),
])
def test_suffixes_parse_and_name_back(text, expected):
    m = parse_method(text)
    assert m == expected
    assert method_name(m) == text
    assert parse_method(m) == m  # the dict form is accepted as is


def test_plain_and_dense_names():
    assert method_name(parse_method("channel/l2/local")) == "channel/l2/local"
    assert method_name(parse_method("dense+int8")) == "dense+int8"
    assert method_name(parse_method({"granularity": "channel", "criterion": "l2", "scope": "local",
                                     "round_to": "auto"})) == "channel/l2/local+auto"


@pytest.mark.parametrize("method,message", [
    ("channel/l2/local+fast", "the suffix must be '+auto', '+round<N>'"),
    ("channel/l2/local+round", "the suffix must be '+auto', '+round<N>'"),
    ("channel/l2/local+round0", "round_to must be a positive integer or 'auto'"),
    ("channel/l2/local+int8+auto", "before any '+int8'"),
    ("channel/l2/local+auto+round8", "give one '+auto' or '+round<N>'"),
    ("unstructured/l2/local+auto", "round_to sets channel or head widths; granularity 'unstructured'"),
    ("2:4/wanda/posttrain+auto", "round_to sets channel or head widths"),
    ({"granularity": "channel", "criterion": "l2", "scope": "local", "round_to": True},
     "round_to must be a positive integer or 'auto'"),
    ({"granularity": "channel", "criterion": "l2", "scope": "local", "round_to": "16"},
     "round_to must be a positive integer or 'auto'"),
])
def test_bad_suffixes_are_named(method, message):
    with pytest.raises(ValueError) as exc:
        parse_method(method)
    assert message in str(exc.value)
