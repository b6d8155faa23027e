"""Tollgate: a caching and rate-limiting reverse proxy for the OpenAI API."""

__version__ = "0.1.0"
