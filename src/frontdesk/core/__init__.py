"""Pieces every domain uses: settings, database, clock, money, ids, masking, audit, outbox."""
