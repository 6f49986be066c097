"""What the tests and the benchmarks share: the process harnesses (tritonserver, gunicorn), the factories of
tiny encoders and real PEFT training outputs, the one reference computation and the one TOLERANCE, texts,
and the summary statistics. Imported as `testkit.<module>` from the repository root (pytest's pythonpath,
`python -m bench...`), never through sys.path edits."""
