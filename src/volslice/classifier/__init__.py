"""The slice-sequence classifier: its task (loss, predictions, score), its k-fold run and its predictor."""
