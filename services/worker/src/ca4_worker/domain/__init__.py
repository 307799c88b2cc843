"""Pure domain logic: positioned events, projection folds, archive encoding. No I/O."""
