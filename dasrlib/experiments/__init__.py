"""The paper's experiments, built on one training runner.

- `runs`: pretrain -> DASR -> baseline with one naming and one reuse rule (`plan_runs`,
  `run_planned`, `train_or_load`) and ``run.json`` read back as a typed `RunRecord`.
- `cost`: one cost measurement (parameters, GMACs, latency, peak memory) for Table 2 and Fig. 4.
- `table1`: published methods and DASR on the seeded test sets (Sec. 4.2).
- `table2`: backbones retrained with one budget, their quality and cost (Sec. 4.3).
- `ablations`: the Fig. 4 variants trained with one budget, as numbers and as the grid (Sec. 4.5).
- `fig5`: Fig. 5 as a measurement, editing v by hand sharpens or smooths the output (Sec. 4.6).

The evaluation loop and table rendering are `dasrlib.evaluate`; the paper's numbers are
`dasrlib.paper`; the test sets are `dasrlib.testsets`.
"""
