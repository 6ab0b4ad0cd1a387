"""The benchmark: clip-length matrix -> bench.csv / bench.json / summary.json, verdicts against the
targets, and the A/B regression check.

Modules: settings (what to run), inputs (scripts, reference, avatar), runner (the measurement
loop and its windows), hostmem (peak RSS), session (one benchmark: build once, measure each clip
length; `iris bench` and `pytest -m gpu` both measure through it), results (files), verdicts (gate
rules), table (printing), abtest (the A/B decision and its calibration), abrun + abworker (base vs
head, interleaved, in two worker processes), schema (formats).
"""
