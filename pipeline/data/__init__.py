"""raw -> prepared -> subset: data sources (ciFAIR, STL-10, any folder), downloads, image decoding, the in-memory
``ImageSet`` and its Parquet form, and the seeded class-balanced subsets every later stage reads."""
