"""The benchmark: clip-length matrix -> bench.csv / bench.json / summary.json, verdicts against the
targets, and the A/B regression check.

Modules: settings (what to run), inputs (scripts, reference, avatar), runner (the measurement
loop), session (one benchmark: build once, measure each clip length), results (files), verdicts
(gate rules), table (printing), abtest + abworker (base vs head, interleaved), schema (formats).
"""
