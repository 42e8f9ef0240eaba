"""Segmentation engines: presets, model packs and inference backends."""
