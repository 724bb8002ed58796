"""Tools around the runtime: the synthetic world (:mod:`.synth`), benchmarks (:mod:`.bench`),
the demo (:mod:`.demo`), the load test (:mod:`.loadtest`), the DDS bench (:mod:`.e2e_bench`)
and the ground-truth scorer (:mod:`.score_node`).

Nothing in the runtime (the node, its conversions, TF, inference, models, adaptation,
ego-motion, geometry, losses, checkpoints) imports this package; ``test/test_layering.py``
checks that. The tools import the runtime freely.
"""
