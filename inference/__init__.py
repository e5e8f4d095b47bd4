"""Running models: device detection now; predictors, runtimes and batching in later issues."""
