"""Reports of booked spend: the month's bill (CSV, HTML) and the spend page.

``build_bill`` and ``bill_csv`` make the statement finance reads;
``render_html`` one self-contained page with a chart of daily spend, the top
spenders and, when given, the bill. ``commands`` holds the CLI entry points.
"""

from extproc.reports.bill import Bill, BillLine, bill_csv, build_bill
from extproc.reports.html import render_html

__all__ = ["Bill", "BillLine", "bill_csv", "build_bill", "render_html"]
