"""Alembic migrations; ``frontdesk db upgrade`` applies them."""
