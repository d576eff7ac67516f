"""Daemon-side pieces of the stateless decoder node (issue #15)."""
