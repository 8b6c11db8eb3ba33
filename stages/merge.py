"""DVC stage `merge`: stream the round's chosen merge into models/<round> (a plain HF checkpoint)."""

from stages._cli import end_process, log, parser, round_run

from safepatching.round.steps.merge import merge


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: merge(params, layout, log=log), parser(__doc__, round=True),
                     argv)


if __name__ == "__main__":
    end_process(main())
