"""Reports: the answer matrix, figures with the tidy data they draw, tables, HTML pages."""

from initbench.report.html import publish, report

__all__ = ["publish", "report"]
