"""A tool-using due-diligence pipeline for tests and for the oracle ablation.

Scoping, then three researchers that query a small SQLite table of company financials
with LangChain tools, then three tool-free analysts, then an investment writer; the
research and analysis groups are capsule groups (:data:`pipeline.DD_GROUPS`). Offline
runs use :func:`scripted.scripted_due_diligence`; :func:`judge.score_run` scores a run
against references built from the table. The data is in ``data/`` (see its README).
"""
