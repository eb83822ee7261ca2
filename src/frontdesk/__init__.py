"""Frontdesk: an outpatient mobile service platform for hospitals."""

__version__ = "0.1.0"
