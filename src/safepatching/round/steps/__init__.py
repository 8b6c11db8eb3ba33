"""The steps of one continual-PSA round, as plain functions `(params, layout, ...) -> result`.

    [redteam] -> validate -> train_patch(se), train_patch(om) -> importance -> select -> merge -> evaluate(test)

One name per step: DVC stage `<step>@<round>` -> `stages/<step>.py` -> `round/steps/<step>.py: <step>()` (the
patch step is DVC `train_se` / `train_om`, one stage per kind, both `stages/train_patch.py --kind`). One module per
step (a stage imports only its own, so its DVC deps are its real code). Each DVC stage is: parse args ->
`RoundLayout.of(params, name)` -> one step; the flow, the CLI, the benches and the tests call the same functions.
Every step reads and writes only through the layout. The last step, recording the round in the registry, is
`safepatching.ops.record.record_round` (MLflow lives in ops/, outside DVC).
"""
