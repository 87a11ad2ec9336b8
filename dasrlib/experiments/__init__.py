"""The paper's experiments, each of one shape, on one training runner.

Every experiment module (`table1`, `table2`, `ablations`) offers

- ``plan(...) -> runs.Plan``: what to train, as stage configs per network (possibly nothing);
- ``tabulate(runs, testset_dir, *, ...) -> dasrlib.tables.TableResult``: from the finished runs
  and the test sets to a long-format results table, written by `dasrlib.tables.write_table`
  (CSV + JSON sidecar through `dasrlib.results.write_results`, and the Markdown).

A notebook runs ``runs.run_plan(module.plan(...))`` (a finished run is reused, not trained again),
then ``module.tabulate(...)``.

- `runs`: pretrain -> DASR -> baseline with one naming and one reuse rule (`plan_runs`,
  `run_plan`, `train_or_load`; `run_plan` also runs a plan inside one wall-clock budget).
- `cost`: one cost measurement (parameters, GMACs, latency, peak memory) and the cost rows of
  Table 2 and Fig. 4.
- `table1`: published methods and DASR on the seeded test sets (Sec. 4.2).
- `table2`: backbones retrained with one budget, their quality and cost (Sec. 4.3).
- `ablations`: the Fig. 4 variants trained with one budget, as numbers and as the grid (Sec. 4.5).
- `fig5`: Fig. 5 as a measurement, editing v by hand sharpens or smooths the output (Sec. 4.6).
- `real_images`: real LR photos (RealSRSet) super-resolved by several methods, side by side
  (Sec. 4.4).

The evaluation loop is `dasrlib.evaluate`, table rendering `dasrlib.tables`; the paper's numbers
are `dasrlib.paper`; the test sets are `dasrlib.testsets`.
"""
