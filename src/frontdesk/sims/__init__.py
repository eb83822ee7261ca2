"""Dev and test counterparts of the ports. No domain imports these."""
