"""Per-user adaptation (``edge-mer adapt``): a labelled session -> per-encoder temperatures, a per-user EEG head.

* :mod:`.labels`: the labels of a session (``session.json``, CSV or JSON file), strictly validated;
* :mod:`.collect`: labelled windows through the daemon's replay sources, runners and encoders;
* :mod:`.folds`: cross-validation over contiguous label blocks, overlapping training windows purged;
* :mod:`.fit`: temperature and logistic-head fits; :mod:`.head_onnx`: the head as ONNX;
* :mod:`.evaluate`: before/after scores per encoder; :mod:`.overlay_out`: the overlay and its report;
* :mod:`.run`: :func:`~edge_mer.adapt.run.adapt`, all of it.
"""
