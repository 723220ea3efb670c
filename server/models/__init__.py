"""Triton Python-backend models. Each model directory's ``1/model.py`` imports one of these classes,
so the code Triton runs is this package's (tested) code."""
