"""Reports: comparison tables, plots with the theory overlay, and static HTML pages."""

from initbench.report.html import publish, report

__all__ = ["publish", "report"]
