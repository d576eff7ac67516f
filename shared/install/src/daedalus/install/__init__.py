"""daedalus-v4l2 on a real machine: install artefacts and the doctor command."""
