"""How fast people review, measured from the decisions they save. "What is an hour of review worth?"
then rests on this workspace's reviewers' own seconds a decision, not on an assumed pace.

The app knows when a decision is saved, not when its reviewer first looked at the tile, so time is
measured over sittings: one reviewer's consecutive saves of decisions made looking at the images
(Store.decide's `seen`: grid keys, page accepts, hand labels), with no break between two of them.
A gap is a break when it is longer than BREAK_S plus PER_TILE_S for each decision after the first
in the save that ends it: a page of 24 accepted at once may follow two minutes of looking at it.
A sitting's time runs from its first save to its last and covers the decisions saved after the
first (the first save's own time is unknown: its reviewer was looking before it). Decisions by
threshold are not a person's pace and are left out, and so is the simulated reviewer, which answers
in no time. Reviewers are told apart by the name they review under, and each one's sittings are
their own: two people under different names do not halve each other's gaps (under one name, they
would).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mpl_core.workspace.simulate import WHO as SIMULATED_REVIEWER

# A gap between two saves longer than this is a break, not time spent on the second one. A person
# may study a hard image for half a minute; a minute without a decision is more often a pause.
BREAK_S = 60.0
# ... plus this much for each further decision in a save: the time to look over a page before
# accepting or rejecting it whole (a key in the grid saves one decision).
PER_TILE_S = 5.0


@dataclass(frozen=True)
class Pace:
    decisions: int = 0  # decisions whose time is known (saved after the first save of a sitting)
    seconds: float = 0.0  # the time spent on them
    sittings: int = 0  # runs of saves with no break between two of them
    total: int = 0  # every decision counted, the timed and each sitting's first save

    @property
    def per_decision(self) -> float | None:
        """Seconds a decision, or None while no decision is timed."""
        return self.seconds / self.decisions if self.decisions else None

    @property
    def per_hour(self) -> float | None:
        return 3600.0 / self.per_decision if self.decisions and self.seconds > 0 else None

    def seconds_for(self, decisions: int) -> float | None:
        """How long that many decisions take at this pace; None while no decision is timed."""
        return decisions * self.per_decision if self.per_decision else None

    def summary(self) -> str:
        """'2.4 s a decision, about 1,500 an hour (312 decisions timed in 2 sittings)'; '' while none is timed."""
        if not self.per_decision:
            return ""
        return (f"{self.per_decision:.1f} s a decision, about {self.per_hour:,.0f} an hour "
                f"({_count(self.decisions, 'decision')} timed in {_count(self.sittings, 'sitting')})")

    def __add__(self, other: Pace) -> Pace:
        return Pace(self.decisions + other.decisions, self.seconds + other.seconds,
                    self.sittings + other.sittings, self.total + other.total)


def measure(saves: Iterable[tuple[float, int]], break_s: float = BREAK_S, per_tile_s: float = PER_TILE_S) -> Pace:
    """One reviewer's pace from their saves: (time, decisions in that save), in any order."""
    return sum((share for _, share in _shares(saves, break_s, per_tile_s)), Pace())


def _shares(saves: Iterable[tuple[float, int]], break_s: float = BREAK_S,
            per_tile_s: float = PER_TILE_S) -> list[tuple[float, Pace]]:
    """Each of one reviewer's saves, oldest first, with what it adds to their pace. A save's share
    depends only on the save before it, so the pace up to any time is the sum of the shares before it."""
    out, last = [], None
    for at, n in sorted(saves):
        if last is not None and at - last <= break_s + per_tile_s * (n - 1):
            out.append((at, Pace(decisions=n, seconds=at - last, total=n)))
        else:
            out.append((at, Pace(sittings=1, total=n)))
        last = at
    return out


def _by_name(saves: Iterable[tuple[str, float, int]], leave_out: Iterable[str]) -> dict[str, list[tuple[float, int]]]:
    skip = set(leave_out)
    per: dict[str, list[tuple[float, int]]] = {}
    for who, at, n in saves:
        if who not in skip:
            per.setdefault(who, []).append((at, n))
    return per


def by_reviewer(saves: Iterable[tuple[str, float, int]], until: float | None = None,
                leave_out: Iterable[str] = (SIMULATED_REVIEWER,)) -> dict[str, Pace]:
    """Each reviewer's pace from (who, time, decisions) saves made before `until` (all if None),
    leaving out the reviewers named in `leave_out` (by default the simulated one: no one's pace)."""
    per = _by_name(((w, at, n) for w, at, n in saves if until is None or at < until), leave_out)
    return {who: measure(own) for who, own in sorted(per.items())}


def before_each(saves: Iterable[tuple[str, float, int]], untils: Sequence[float],
                leave_out: Iterable[str] = (SIMULATED_REVIEWER,)) -> list[Pace]:
    """Every reviewer's pace together from the saves made before each time in `untils`: what
    overall(by_reviewer(saves, until)) gives for each, in one pass over the saves."""
    shares = sorted((share for own in _by_name(saves, leave_out).values() for share in _shares(own)),
                    key=lambda share: share[0])
    times, running = [at for at, _ in shares], [Pace()]
    for _, share in shares:
        running.append(running[-1] + share)
    return [running[bisect.bisect_left(times, until)] for until in untils]


def overall(paces: dict[str, Pace]) -> Pace:
    """Every reviewer's time and decisions together: the workspace's seconds a decision."""
    return sum(paces.values(), Pace())


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
