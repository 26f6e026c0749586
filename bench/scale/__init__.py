"""Scale-out on Ray: a benchmark matrix across a lab's nodes, and load from several client hosts.

    bench.scale.plan     a matrix plan (axes x resources) -> cells, each a typed RunSpec
    bench.scale.cells    one cell run exactly as `bench run` runs it, on this machine or a Ray node
    bench.scale.matrix   cells one after another here, or one Ray task each; the matrix state, resume
    bench.scale.index    the index of every cell (CSV and Parquet) and the matrix report
    bench.scale.workers  `bench run --load-workers N`: N Ray actors drive one endpoint, records merged
    bench.scale.cluster  connecting to Ray (an optional extra: pip install .[ray]) and describing nodes

Ray is imported only inside these modules' functions, so everything else works without it. This file
imports nothing: bench.run imports bench.scale.workers, which must not pull in the matrix (which imports
bench.run).
"""
