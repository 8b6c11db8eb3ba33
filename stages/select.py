"""DVC stage `select`: sweep merge variants on the validation split and pick this round's point."""

from stages._cli import end_process, log, parser, round_run

from safepatching.round.steps.select import select


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: select(params, layout, log=log), parser(__doc__, round=True),
                     argv)


if __name__ == "__main__":
    end_process(main())
