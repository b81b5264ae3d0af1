"""Feature spaces: networks that embed images, and the per-dataset statistics cached from them.

- :mod:`acneops.features.extractors` — extractors registered by name: ``inception`` (TF-Inception, true FID),
  ``domain`` (the penultimate layer of an acneops classifier: this package sits above acneops.classify),
  ``tiny`` (a fixed random network for tests);
- :mod:`acneops.features.inception` — the TF-Inception FID network loaded from a local weights file;
- :mod:`acneops.features.cache` — feature statistics cached per dataset, keyed by file hashes.

The numbers computed on features (Fréchet distance, KID, precision/recall) live in :mod:`acneops.metrics`.
"""
