"""What a training run records (`records`, `callbacks`) and the helper process that records
it while the trainer trains (`recorder`, `writer`)."""
