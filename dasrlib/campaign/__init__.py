"""Training campaigns: the trained DASR and its equal-iteration SRResNet, grown a wall-clock
budget at a time on whatever device is here (``python -m dasrlib.campaign run --budget 140m``).

- `plan`: what is trained (roles, targets, the configs; every deviation from the paper).
- `run`: one budget: continue the published models, train, evaluate, publish.
- `evaluation`: the test sets, every model on every set and level, paired differences.
- `figures`: what each budget draws with its weights (real photos, the Fig. 5 sweep).
- `publish`: ``results/models/``: weights, history, eval files, curves, figures, the model card.
- `cli`: ``dasr campaign`` / ``python -m dasrlib.campaign``.
"""
