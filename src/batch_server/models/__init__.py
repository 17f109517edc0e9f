"""The model side of the product: the registry at run time (:mod:`.registry`), test loads,
benchmarks, comparisons and prices."""
