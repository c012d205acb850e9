"""paper: figures and tables regenerated from logged run directories (DESIGN.md section 3.5).

Scripts here are pure functions of run directories (``metrics.jsonl`` / ``result.json``); nothing imports this
package. The comparison table of a runs folder is ``feedback results <runs-dir>`` (:mod:`experiments.results`);
figure scripts arrive with the paper issue.
"""
