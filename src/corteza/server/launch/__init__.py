"""Launching the server: tunnels and the background server for notebooks."""
