"""The secure group sums with one process per party: a `torch.distributed` gloo group on localhost.

Rank r is party r and also the data owner of a part of the agents (agent j is owned by rank j mod P), which is the
only place its plaintext values exist: each rank reads only its own agents' values from disk. A round:

1. each owner encodes its agents' values (`FixedPoint.encode`, overflow-checked) and splits them into P shares,
   keeps share r and sends share q to rank q (point-to-point `isend`/`irecv`), so no process ever holds all the
   shares of another owner's agent;
2. each rank places the shares it holds by agent and adds them per group (`parties.local_group_sums`, mod 2^64);
3. the ranks all-gather their published local sums of the public groups and add them: the revealed totals.

Each rank writes its view (shares received per owner, the published sums, the revealed totals) to
`<workdir>/party<r>.pt`; `distributed_group_sums` returns the totals and the views.

Example (spawns 3 processes; a few seconds for their imports):
    >>> import torch
    >>> totals, views = distributed_group_sums(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0, 1, 0, 1]), 2)
    >>> totals.tolist()
    [[4.0, 6.0]]
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from diffabm.private.fixed_point import FixedPoint
from diffabm.private.parties import local_group_sums
from diffabm.private.sharing import share


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(rank: int, parties: int, port: int, workdir: str, frac_bits: int, timeout_s: float) -> None:
    """One party: read its own agents' values and the public structure, run the round, write its view."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=parties, timeout=dt.timedelta(seconds=timeout_s))
    try:
        folder = Path(workdir)
        public = torch.load(folder / "public.pt")  # group ids, revealed groups, owners' agent ids, shapes: public
        owned = torch.load(folder / f"owner{rank}.pt")  # this rank's agents' values (B, n_rank): private to it
        fixed_point = FixedPoint(frac_bits)
        shares = share(fixed_point.encode(owned, "message", public["summands"]), parties)
        received: dict[int, Tensor] = {rank: shares[rank]}
        requests = []
        for other in range(parties):
            if other == rank:
                continue
            requests.append(dist.isend(shares[other].contiguous(), dst=other))
            n_other = public["agents_of"][other].numel()
            received[other] = torch.empty(public["draws"], n_other, dtype=torch.int64)
            requests.append(dist.irecv(received[other], src=other))
        for request in requests:
            request.wait()
        del shares  # the shares sent to others are theirs now
        held = torch.zeros(public["draws"], public["n_agents"], dtype=torch.int64)
        for owner, part in received.items():
            held[:, public["agents_of"][owner]] = part
        local = local_group_sums([held], [(public["group"], 0)], public["n_groups"]).index_select(1, public["public"])
        partials = [torch.empty_like(local) for _ in range(parties)]
        dist.all_gather(partials, local)
        total = partials[0].clone()
        for part in partials[1:]:
            total += part
        view = {"received": received, "published": partials, "revealed": total}
        torch.save(view, folder / f"party{rank}.pt")
    finally:
        dist.destroy_process_group()


def distributed_group_sums(
    values: Tensor,
    group: Tensor,
    n_groups: int,
    parties: int = 3,
    frac_bits: int = 32,
    public: Tensor | None = None,
    timeout_s: float = 120.0,
) -> tuple[Tensor, list[dict]]:
    """Σ over each group's members of `values` (B, N) -> (B, G), `group` (N,) the members' group ids, computed by
    `parties` gloo processes on localhost (one per party); only the groups in `public` (None: all) are revealed.
    Returns the decoded totals (zero outside `public`) and every rank's view (`received`: owner -> the (B, n_owner)
    shares it got, `published`: all ranks' local sums, `revealed`: the ring totals)."""
    values = values.detach().cpu()
    group = group.cpu().long()
    public = torch.arange(n_groups) if public is None else public.cpu().long()
    agents_of = [torch.arange(owner, values.shape[1], parties) for owner in range(parties)]
    counts = torch.bincount(group, minlength=n_groups)[public]
    summands = max(int(counts.max()) if counts.numel() else 1, 1)
    with tempfile.TemporaryDirectory(prefix="diffabm-parties-") as workdir:
        folder = Path(workdir)
        structure = {
            "group": group,
            "public": public,
            "agents_of": agents_of,
            "n_agents": values.shape[1],
            "draws": values.shape[0],
            "n_groups": n_groups,
            "summands": summands,
        }
        torch.save(structure, folder / "public.pt")
        for owner, agents in enumerate(agents_of):
            torch.save(values[:, agents].clone(), folder / f"owner{owner}.pt")
        mp.spawn(_rank_main, args=(parties, _free_port(), workdir, frac_bits, timeout_s), nprocs=parties, join=True)
        views = [torch.load(folder / f"party{rank}.pt") for rank in range(parties)]
    decoded = FixedPoint(frac_bits).decode(views[0]["revealed"], values.dtype)
    totals = decoded.new_zeros(decoded.shape[0], n_groups).index_copy_(1, public, decoded)
    return totals, views
