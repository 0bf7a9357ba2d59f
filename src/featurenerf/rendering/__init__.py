"""Sampling along rays and volume compositing: small pure functions that broadcast."""
