"""DVC stage `redteam`: run a red-team pool through the round's parent model; its failures are the round's batch.

Only rounds listed under params `redteam:` have this stage (the organism's demo rounds); rounds whose batch a user
hands over through data/incoming/ do not.
"""


from stages._cli import end_process, parser, round_run

from safepatching.round.steps.redteam import redteam


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: redteam(params, layout), parser(__doc__, round=True), argv)


if __name__ == "__main__":
    end_process(main())
