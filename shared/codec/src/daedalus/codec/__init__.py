"""What the daemon's PyAV decoders share across phases (session.py)."""
