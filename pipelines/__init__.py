"""Dagster definitions for the AstroCLIP pipeline (thin assets over astroclip_core)."""
