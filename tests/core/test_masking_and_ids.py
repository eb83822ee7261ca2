import logging
from datetime import UTC, datetime

import pytest

from frontdesk.core.ids import is_merchant_number, merchant_number
from frontdesk.core.masking import (
    MaskingFilter,
    mask_id_number,
    mask_name,
    mask_phone,
    mask_text,
)


def test_mask_name() -> None:
    assert mask_name("张三丰") == "张*丰"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧**娜"
    assert mask_name("李") == "*"
    assert mask_name("") == ""


def test_mask_id_and_phone() -> None:
    assert mask_id_number("320102199001011234") == "3201**********1234"
    assert mask_id_number("32010219900101123X") == "3201**********123X"
    assert mask_phone("13812345678") == "138****5678"


def test_mask_text_finds_ids_and_phones_in_free_text() -> None:
    text = "card 00123 holder id 320102199001011234 phone 13812345678 order 202611270001"
    assert mask_text(text) == (
        "card 00123 holder id 3201**********1234 phone 138****5678 order 202611270001"
    )


def test_log_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.masking")
    logger.addFilter(MaskingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="test.masking"):
            logger.info("binding %s with phone %s", "320102199001011234", "13812345678")
    finally:
        logger.filters.clear()
    assert caplog.messages == ["binding 3201**********1234 with phone 138****5678"]


def test_merchant_numbers_are_unique_sortable_and_wechat_safe() -> None:
    earlier = merchant_number("P", at=datetime(2026, 11, 27, 1, 0, 0, 1000, tzinfo=UTC))
    later = merchant_number("P", at=datetime(2026, 11, 27, 1, 0, 0, 2000, tzinfo=UTC))
    assert earlier.startswith("P20261127010000001")
    assert earlier < later
    many = {merchant_number("R") for _ in range(20_000)}
    assert len(many) == 20_000
    assert all(is_merchant_number(n) and 6 <= len(n) <= 32 for n in many)


@pytest.mark.parametrize("prefix", ["", "p", "ABCD", "P1", "支"])
def test_merchant_number_refuses_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        merchant_number(prefix)
