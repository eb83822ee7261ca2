"""The phone page (built later in this file)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
