"""Slice-level labels from adjacent-slice descriptors (RSNA 2019; Ngo et al.): stage 1, a 2D CNN per
slice whose pooled features are each slice's descriptor; stage 2, a classifier over each slice's and
its neighbours' descriptors (or a BiGRU over the study)."""
