"""Run the benchmark suite: ``python -m bench`` (or ``flowdeck bench``)."""

from bench.suite import main

main()
