"""Building blocks with no knowledge of layers' meaning: zips, trees, threads, HTTP, text."""
