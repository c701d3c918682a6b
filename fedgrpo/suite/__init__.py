"""``fedgrpo suite SUITE.yaml``: many runs from one file (spec), run resumably (runner), reported
(report). The report reads only what the runs wrote, so it can be remade at any time."""
