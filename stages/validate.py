"""DVC stage `validate`: Great Expectations checks of one round's harmful-data batch.

Earlier batches are those of the round's lineage (parents); evaluation prompts come from the eval splits.
A failing batch stops the round with a clear error; its report and HTML report page go to data/quarantine/.
"""


from stages._cli import end_process, parser, round_run

from safepatching.round.steps.validate import validate


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: validate(params, layout), parser(__doc__, round=True), argv)


if __name__ == "__main__":
    end_process(main())
