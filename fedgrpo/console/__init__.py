"""The operators' consoles of a deployment: ``fedgrpo org`` for an organisation (join with one command,
see every reply that left) and ``fedgrpo superlink`` for the server (start it, register and watch
organisations by name). Guide: docs/deployment.md."""
