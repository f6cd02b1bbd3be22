"""Human labels in Argilla: the bridge (`bridge.py`: push pairs and candidates as records, pull
responses as annotations) and control of the local annotation server (`service.py`; the
server's own files live in the top-level `annotate/` folder)."""
