"""Host export tools (installed as ``edge_mer_export``); may import edge_mer_calibration and edge_mer."""
