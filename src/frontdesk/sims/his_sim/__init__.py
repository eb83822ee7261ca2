"""A demo HIS speaking the server side of the HIS bridge protocol."""
