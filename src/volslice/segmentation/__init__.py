"""Organ segmentation: a 2.5D segmentation-models-pytorch network trained on the series that have
masks, and its Volume Fusion (MIS-FM) pretraining on every cached series."""
