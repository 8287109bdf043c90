"""The Fig. 4 pipeline: ``sweep`` trains and evaluates sigma^2 x method x seed; ``records`` reads and
aggregates the run folders; ``report`` writes the tables (text, Markdown, CSV, the README's section);
``figures`` draws them; ``collect_results`` is the command that ties the last three together.

    python -m experiments.sweep --color_vars 0.020 --methods baseline lnl --seeds 1 --out sweeps/fig4
    python -m experiments.collect_results sweeps/fig4
"""
