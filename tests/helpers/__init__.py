"""Helpers shared by the unit and integration tests (fixtures, launchers, crafted inputs)."""
