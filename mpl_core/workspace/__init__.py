"""Workspace: a project on disk. The store (SQLite), review decisions, calibration and thresholds,
media (thumbnails) and export. Imports engine, data and the foundation."""
