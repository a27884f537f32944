"""Test-suite helpers shared by the conftest and the tests."""
