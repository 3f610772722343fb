"""Gantry's client commands: log in to a gateway, list what runs where, deploy and watch.

``gantry.cli`` registers them beside ``up`` and ``token issue``; each talks to the gateway over
HTTP with the token that ``gantry login`` kept, and ends with one of the exit codes of
``gantry.client.errors``."""
