"""paper: figures and tables regenerated from logged run directories (DESIGN.md section 3.5).

One module per figure or table (``fig_steps``, ``tab_pointing``, ``fig_robustness``, ``fig_routing``,
``fig_perceiver``, ``tab_cost``, ``tab_zoo``), each a pure function of run directories (``result.json``,
``config.yaml``, ``pointing.json``) that writes PDF, PNG and the CSV of the plotted numbers, and declares the
experiment configs (``SOURCES``, with the overrides of the CPU and GPU scales) that produce its data.
``python -m paper.make`` (``feedback paper``) runs what is missing and writes ``paper.md`` from ``template.md``.
Nothing imports this package; it trains nothing.
"""
