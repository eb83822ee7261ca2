"""Catalog tests share the booking tests' environment (WeChat sim, demo HIS, worker)."""

from tests.booking.conftest import env  # noqa: F401
