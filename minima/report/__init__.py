"""The study's report, built from run folders alone.

- ``collection``: every complete run of a study folder as tidy DataFrames;
- ``tables``: the tables (mean ± sd over seeds), Markdown and LaTeX;
- ``figures``: the comparison figures the plotting notebook draws;
- ``build``: tables, then the plotting notebook executed headless;
- ``facts``: every number the prose quotes, recomputed.
"""
