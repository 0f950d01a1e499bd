"""Unit tests: this folder holds helpers shared across the layers' folders (manual_clock)."""
