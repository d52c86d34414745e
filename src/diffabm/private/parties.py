"""P computing parties in one process: the secure group sums of the agents' messages, with each party's view.

A round of `PartySimulator.group_sums`:

1. every agent (the owner of its messages) encodes each message in fixed point (`FixedPoint.encode`, checked
   against overflow) and splits it into P additive shares (`sharing.share`), sending share p to party p;
2. party p adds, per group, the shares it holds of the group's members (int64 `index_add_`, mod 2^64) and
   publishes these local sums for the public groups only;
3. the published local sums are added (mod 2^64) and decoded: the per-group totals, revealed to every party.

A `Party` keeps what it saw: the shares it received, what it and the others published, and what was revealed
(the last round only, or every round with `record=True`), so that tests can inspect views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diffabm.private.fixed_point import FixedPoint
from diffabm.private.sharing import reconstruct, share

Membership = tuple[Tensor, int]  # (group id of every agent (N,), index of the message source it adds)


@dataclass
class Party:
    """One computing party's view: received shares (quantity: (B, N) int64), the local sums each party published
    (its own included) and the revealed values, per round; counters of everything it ever saw."""

    index: int
    record: bool = False
    received: list[dict[str, Tensor]] = field(default_factory=list)
    published: list[list[Tensor]] = field(default_factory=list)  # per round: every party's published local sums
    revealed: list[Tensor] = field(default_factory=list)
    rounds: int = 0
    shares_seen: int = 0
    revealed_values: int = 0

    def _keep(self, log: list, item) -> None:
        if not self.record:
            log.clear()
        log.append(item)

    def receive(self, shares: dict[str, Tensor]) -> None:
        self.rounds += 1
        self.shares_seen += sum(part.numel() for part in shares.values())
        self._keep(self.received, shares)

    def see_published(self, partials: list[Tensor]) -> None:
        self._keep(self.published, partials)

    def see_revealed(self, values: Tensor) -> None:
        self.revealed_values += values.numel()
        self._keep(self.revealed, values)


def local_group_sums(shares: Sequence[Tensor], memberships: Sequence[Membership], n_groups: int) -> Tensor:
    """One party's per-group sums (B, G) of the shares it holds (one (B, N) int64 tensor per message source)."""
    total = shares[0].new_zeros(shares[0].shape[0], n_groups)
    for group, source in memberships:
        total.index_add_(1, group, shares[source])  # int64: wraps modulo 2^64
    return total


class PartySimulator:
    """P parties (default 3) running additive secret-sharing aggregation in one process.

    `fixed_point`: the encoding (default 32 fractional bits); `record`: keep every round in the parties' views
    (otherwise the last round only).
    """

    def __init__(self, parties: int = 3, fixed_point: FixedPoint | None = None, record: bool = False):
        if parties < 2:
            raise ValueError(f"secret sharing needs at least 2 parties, got {parties}")
        self.fixed_point = fixed_point or FixedPoint()
        self.parties = [Party(index, record) for index in range(parties)]

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    def deal(
        self, sources: Sequence[Tensor], names: Sequence[str], summands: int, fixed_point: FixedPoint | None = None
    ) -> list[list[Tensor]]:
        """The agents' side: every source encoded (`fixed_point`, default the simulator's) and shared; party p
        receives [source][p]. Returns the shares by party: [p][source]."""
        encode = (fixed_point or self.fixed_point).encode
        shares = [share(encode(values, name, summands), self.n_parties) for values, name in zip(sources, names)]
        by_party = [[shares[source][p] for source in range(len(sources))] for p in range(self.n_parties)]
        for party, held in zip(self.parties, by_party):
            party.receive(dict(zip(names, held)))
        return by_party

    def group_sums(
        self,
        sources: Sequence[Tensor],
        memberships: Sequence[Membership],
        n_groups: int,
        public: Tensor | None = None,
        names: Sequence[str] | None = None,
        summands: int | None = None,
        fixed_point: FixedPoint | None = None,
    ) -> Tensor:
        """Σ over each group's members of their message (B, G), from shares; only the groups in `public` (ids;
        None: all) are revealed, the others are zero. `summands` bounds the members of a revealed group (None:
        counted from `memberships`); `names` name the sources in overflow errors; `fixed_point`: the encoding of this
        call (default the simulator's)."""
        fixed_point = fixed_point or self.fixed_point
        names = list(names) if names is not None else [f"message {index}" for index in range(len(sources))]
        if summands is None:
            counts = torch.zeros(n_groups, dtype=torch.int64, device=sources[0].device)
            for group, _ in memberships:
                counts += torch.bincount(group, minlength=n_groups)
            summands = int((counts if public is None else counts[public]).max())
        by_party = self.deal(sources, names, summands, fixed_point)
        partials = []
        for held in by_party:
            local = local_group_sums(held, memberships, n_groups)
            partials.append(local if public is None else local.index_select(1, public))
        for party in self.parties:
            party.see_published(partials)
        total = reconstruct(partials)
        for party in self.parties:
            party.see_revealed(total)
        decoded = fixed_point.decode(total, sources[0].dtype)
        if public is None:
            return decoded
        return decoded.new_zeros(decoded.shape[0], n_groups).index_copy_(1, public, decoded)

    def secure_sum(self, values: Tensor, name: str = "message") -> Tensor:
        """Σ over agents (the last dimension) of `values` (B, N) -> (B,): only the totals are revealed."""
        group = torch.zeros(values.shape[-1], dtype=torch.long, device=values.device)
        return self.group_sums([values], [(group, 0)], 1, names=[name], summands=values.shape[-1])[:, 0]
