"""Plumbing shared by every Tandem service."""
