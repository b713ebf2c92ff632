"""Measuring the op against ORT's own Conv: per-layer benchmark (bench, over the layer_sets) and
whole-model memory and latency (compare, which runs compare_worker in fresh processes and writes
the report with compare_report)."""
