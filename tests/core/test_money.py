import pytest

from frontdesk.core.money import MoneyError, check_fen, fen_to_yuan_text, format_fen, parse_yuan


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12.5", 1250),
        ("12.50", 1250),
        ("0.01", 1),
        ("0", 0),
        ("¥1,234.00", 123400),
        (" 7 ", 700),
        ("￥3.05", 305),
    ],
)
def test_parse_yuan_reads_what_people_type(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "1.234",
        "abc",
        "",
        "1e3",
        "12.",
        ".5",
        "1_000",
        "NaN",
        "１２",
        "9999999999999",
        "12.5\x00",
        "0x10",
    ],
)
def test_parse_yuan_refuses_bad_text(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_yuan(text)


def test_parse_yuan_refuses_floats() -> None:
    with pytest.raises(MoneyError, match="never as a float"):
        parse_yuan(12.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.0, True, -1, "100", None, 10**12])
def test_check_fen_refuses_non_integers_negatives_and_huge(value: object) -> None:
    with pytest.raises(MoneyError):
        check_fen(value)


def test_check_fen_zero_can_be_refused() -> None:
    assert check_fen(0) == 0
    with pytest.raises(MoneyError, match="greater than zero"):
        check_fen(0, allow_zero=False)


def test_format_fen() -> None:
    assert format_fen(1250) == "¥12.50"
    assert format_fen(5) == "¥0.05"
    assert format_fen(123456789) == "¥1,234,567.89"
    assert format_fen(-1250) == "-¥12.50"
    assert fen_to_yuan_text(123456789) == "1234567.89"


def test_format_then_parse_round_trips() -> None:
    for fen in (0, 1, 99, 100, 101, 123456, 999999999):
        assert parse_yuan(format_fen(fen)) == fen
