"""Random container names: `<adjective>_<surname>`, e.g. `steady_lovelace`.

Upstream klee names every container it creates, because kleened does not; we keep that.
"""

from __future__ import annotations

import random

ADJECTIVES = """
    agile amber ardent bold brave bright brisk calm candid careful cheerful clever cosmic curious
    daring deft eager earnest elated fearless fond frank gentle glad golden happy hardy hopeful
    humble jolly keen kind lively lucid lucky merry mellow modest nimble noble patient peaceful
    plucky polite proud quick quiet radiant ready serene sharp sincere snappy steady sunny swift
    tender tidy upbeat vivid warm wise witty zealous
""".split()  # noqa: SIM905 (a word list reads better as words)

SURNAMES = """
    allen babbage backus bartik bell boole borg cerf church codd conway dijkstra engelbart euler
    fermat floyd gauss goldberg hamilton hamming hopper huffman kahn kay knuth lamport liskov
    lovelace mccarthy minsky naur neumann noether pascal perlman ritchie shannon shaw sutherland
    tarjan thompson torvalds turing wirth wing yao zuse
""".split()  # noqa: SIM905 (a word list reads better as words)


def random_name() -> str:
    return f"{random.choice(ADJECTIVES)}_{random.choice(SURNAMES)}"
