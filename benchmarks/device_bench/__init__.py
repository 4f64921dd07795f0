"""The parts of the prepared device benchmark that ``benchmarks/device.py`` (its command line) puts together:
``configs`` (the sizes of each configuration), ``timing`` (the clock and the interleaved rounds), ``table`` (the
rows, their cells and the Markdown report) and ``cases`` (the models and images of a run, the cases that fill the
rows, and the plan that orders them)."""
