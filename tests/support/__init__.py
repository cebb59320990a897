"""Helpers shared by the test suite: real servers, real clients, real services."""
