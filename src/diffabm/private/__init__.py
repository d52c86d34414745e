"""Private agent-based modelling: additive secret sharing of the agents' messages (DecABM).

An ABM whose cross-agent aggregation is a permutation-invariant sum (Σ_{j ∈ g} m_j per group g) can run, and be
calibrated by gradients, without any party seeing an agent's message m_j: each agent (the owner of its own state)
encodes m_j in fixed point and splits it into P additive shares over the ring Z_{2^64}, one per computing party;
each party adds the shares it holds per group; only the per-group totals are reconstructed
(Cramer, Damgård & Nielsen 2015, "Secure Multiparty Computation and Secret Sharing", §3.2; the decentralised
epidemic ABM and its calibration: Chopra et al. 2024, "DecABM: private agent-based modelling").

Modules: `fixed_point` (the encoding of reals in the ring and its overflow check), `sharing` (shares from the
operating system's CSPRNG and their reconstruction), `parties` (P parties in one process, each party's view a
separate object), `distributed` (one `torch.distributed` gloo process per party). The epidemic model's contact
layers over this protocol: `diffabm.models.epidemic.private.SecretSharedContactLayers` (`model.privacy:
secret_sharing`).

Threat model: the P parties are honest-but-curious (they follow the protocol and try to learn from what they see)
and do not collude: any P − 1 of them see shares that are uniformly distributed and independent of the agents'
values. What is public (revealed to the parties, which hand each group's value to its members): per call, the sum
over each group of its members' messages, e.g. a group's total infectiousness on a day (which its members need
for their force of infection) or, in the adjoint, the group's sum of the members' gradient terms. The sum of a
"no group" sink is not revealed. Nothing per agent is revealed to anyone but its owner; as in the plain model, a
group of two reveals the other member's message to each member: the aggregate is the model's, not the protocol's,
disclosure. `PartySimulator.secure_sum` reveals only a total over all agents. Not hidden: the group memberships
(which agent adds to which group's sum) and the group sizes are known to the parties, which route the shares by
them; hiding the contacts too would need each agent to share a vector over all groups (O(agents × groups)) or the
members of each group to act as that group's parties.

Precision: a real x is the ring element round(x · 2^F), error ≤ 2^-(F+1). The epidemic model's forward messages
(infectiousness) use F = 32 (resolution 2^-32 ≈ 2.3e-10): a float32 value of magnitude ≥ 2^(23−F) ≈ 2e-3 is encoded
exactly and ring sums are exact, so a revealed group total differs from the plain model's float32 sum by that sum's
own rounding (≈ 1e-7 relative), not by the encoding; the infection draw compares 1 − exp(−rate) with uniform noise,
so such a difference flips a draw with probability ≈ 1e-7 per agent-day (none seen in the tests and the
private-demo study). The adjoint's terms (dL/d rate ψ, as large as ~1/rate) use F = 16 (resolution 1.5e-5), which
moves a β-gradient by ≈ 1e-7 relative. A sum of m values is correct while |Σ| < 2^(63−F); every value is checked before
encoding against |x| ≤ 2^(62−F) / m, m the largest number of summands of a revealed sum (one bit of headroom for
the rounding), and a value beyond it is a ValueError naming the quantity, never a silent wrap-around.

Example:
    >>> import torch
    >>> from diffabm.private import PartySimulator
    >>> protocol = PartySimulator(parties=3)
    >>> values = torch.tensor([[0.5, 1.25, 2.0, 4.0]])
    >>> group = torch.tensor([0, 0, 1, 1])
    >>> protocol.group_sums([values], [(group, 0)], n_groups=2).tolist()
    [[1.75, 6.0]]
    >>> [len(party.published) for party in protocol.parties]  # each party published its local sums once
    [1, 1, 1]
"""

from diffabm.private.fixed_point import FixedPoint
from diffabm.private.parties import Party, PartySimulator
from diffabm.private.sharing import random_ring, reconstruct, share

__all__ = ["FixedPoint", "Party", "PartySimulator", "random_ring", "reconstruct", "share"]
