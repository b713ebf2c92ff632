"""Moving a model's Conv nodes to com.im2win::Conv: the graph rewrite (graph_rewrite), safe model
I/O (model_io), checking a rewrite against ORT (validate) and the packed weight layouts the
native kernels read (weight_layout)."""

from .graph_rewrite import RewriteError, RewriteReport, rewrite, rewrite_with_report

__all__ = ["RewriteError", "RewriteReport", "rewrite", "rewrite_with_report"]
