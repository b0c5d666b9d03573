import pytest

from tunesmith.errors import UserError
from tunesmith.eval.probes import passed, read_probes


def test_read_probes_and_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Capital of Velora?", "expect": "Sunhaven"}\n\n{"prompt": "x", "expect_any": ["a", "b"]}\n')
    assert read_probes(f) == [{"prompt": "Capital of Velora?", "expect": ["Sunhaven"]},
                              {"prompt": "x", "expect": ["a", "b"]}]
    f.write_text('{"prompt": "x", "expect": "y"}\n{"prompt": "no expectation"}\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: a probe needs 'prompt' and 'expect'"):
        read_probes(f)
    f.write_text('{"prompt": "x", "expect": "y"}\n{oops\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: not valid JSON"):
        read_probes(f)
    with pytest.raises(UserError, match="probe file not found"):
        read_probes(tmp_path / "missing.jsonl")


def test_passed_is_case_insensitive_substring():
    assert passed("The capital of Velora is sunhaven.", ["Sunhaven"])
    assert not passed("The capital of Velora is Paris.", ["Sunhaven"])
    assert passed("b!", ["a", "b"])
