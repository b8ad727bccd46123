"""What the benchmark is: problems (dataset), the test data file (testdata) and its h5 schema (h5targets)."""
