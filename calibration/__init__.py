"""Calibration data readers and calibrators (installed as ``edge_mer_calibration``); may import edge_mer, never edge_mer_export."""
