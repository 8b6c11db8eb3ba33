"""The round, the use-case floor above the wings: its steps (`safepatching.round.steps`, one per DVC stage), the
validation sweep and choice rule (`selection`) and the patches' diagnosis (`diagnosis`). Where a round's files live
is `safepatching.layout` (ground floor)."""
