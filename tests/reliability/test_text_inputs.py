"""Config, filter and label files and label rules: refused quickly and clearly, before any work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from m2m_bids.exitcodes import ExitCode
from m2m_bids.textinput import MAX_TEXT_BYTES

BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(9))

COMMON = ("participant", "--dry-run", "--skip-bids-validation")


def test_yaml_alias_bomb_is_refused_at_once(m2m, small_bids: Path, tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    result = m2m(small_bids, tmp_path / "out", *COMMON, "--config-file", config)
    assert time.monotonic() - started < 10
    assert result.code == ExitCode.USAGE
    assert "aliases" in result.err and str(config) in result.err


@pytest.mark.parametrize("option", ["--config-file", "--bids-filter-file", "--participant-label"])
def test_binary_text_inputs_are_refused(m2m, small_bids: Path, tmp_path: Path, option: str) -> None:
    binary = tmp_path / "input.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01" * 8)
    result = m2m(small_bids, tmp_path / "out", *COMMON, option, binary)
    assert result.code == ExitCode.USAGE
    assert "not UTF-8" in result.err and str(binary) in result.err


def test_oversized_config_is_refused_unread(m2m, small_bids: Path, tmp_path: Path) -> None:
    config = tmp_path / "huge.toml"
    with config.open("wb") as handle:
        handle.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk used
    result = m2m(small_bids, tmp_path / "out", *COMMON, "--config-file", config)
    assert result.code == ExitCode.USAGE and "more than" in result.err


def test_missing_config_and_filter_files_exit_66(m2m, small_bids: Path, tmp_path: Path) -> None:
    for option in ("--config-file", "--bids-filter-file"):
        result = m2m(small_bids, tmp_path / "out", *COMMON, option, tmp_path / "absent.toml")
        assert result.code == ExitCode.NO_INPUT, option
        assert "absent.toml" in result.err


def test_config_sections_must_be_tables(m2m, small_bids: Path, tmp_path: Path) -> None:
    config = tmp_path / "flat.yaml"
    config.write_text("execution: [1, 2]\n")
    result = m2m(small_bids, tmp_path / "out", *COMMON, "--config-file", config)
    assert result.code == ExitCode.USAGE and "table of sections" in result.err


def test_system_file_as_label_file_is_refused_without_echo(m2m, small_bids: Path, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nsecret-user:x:1000:1000::/home/s:/bin/sh\n")
    result = m2m(small_bids, tmp_path / "out", *COMMON, "--participant-label", passwd)
    assert result.code == ExitCode.USAGE
    assert "line 1" in result.err and "root:" not in result.err and "secret-user" not in result.err


def test_empty_participant_label_does_not_select_everyone(m2m, small_bids: Path, tmp_path: Path) -> None:
    result = m2m(small_bids, tmp_path / "out", *COMMON, "--participant-label", "")
    assert result.code == ExitCode.USAGE and "empty label" in result.err
    assert "sub-01:" not in result.out


@pytest.mark.parametrize("rule, words", [
    ("9**9**9 > 1", "exponents"),
    ("'x'*10**12 == 'y'", "arithmetic on text"),
    ("__import__('os').system('true') == 0", "unsupported syntax"),
    ("a > " + "+".join(["1"] * 150), "terms"),
    ("x" * 2000 + " > 1", "characters"),
])
def test_unbounded_or_unsafe_label_rules_are_refused_before_preprocessing(
        m2m, small_bids: Path, tmp_path: Path, rule: str, words: str) -> None:
    started = time.monotonic()
    result = m2m(small_bids, tmp_path / "out", "group", "--skip-bids-validation", "--label-rule", rule)
    assert time.monotonic() - started < 10
    assert result.code == ExitCode.USAGE and words in result.err
    assert not (tmp_path / "out").exists(), "a refused rule must not start the run"


def test_label_rule_on_a_missing_column_is_refused_before_preprocessing(
        m2m, small_bids: Path, tmp_path: Path) -> None:
    result = m2m(small_bids, tmp_path / "out", "group", "--skip-bids-validation", "--preset", "tiny",
                 "--label-rule", "no_such_column > 1")
    assert result.code == ExitCode.USAGE and "no_such_column" in result.err
    assert not (tmp_path / "out" / "work" / "tensor-cache").exists()


def test_float_arithmetic_keeps_deep_powers_fast() -> None:
    """Nested literal powers overflow to infinity in float64 instead of building huge integers."""
    import pandas as pd

    from m2m_bids.label_rule import LabelRule

    started = time.monotonic()
    labels = LabelRule.parse("((((9**9)**9)**9)**9)**9 > age").evaluate(
        pd.DataFrame({"age": [70.0, 80.0]}), ["CN", "AD"])
    assert labels.tolist() == ["AD", "AD"] and time.monotonic() - started < 1
