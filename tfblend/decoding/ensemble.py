"""The log-likelihoods of an ensemble of exports, for decoding.

An ensemble's posterior is the mean of its members' posteriors (as ``tfblend.evaluation`` and
``tfblend.evaluation.utterances`` average them); its log-likelihood per frame and senone is

    log(mean_i posterior_i) - log prior.

Every member serves ``log_likelihoods_i = log posterior_i - log prior`` with the senone prior
counted on its training alignments (``tfblend.export``). The members must share that prior:
then ``log(mean_i posterior_i) - log prior = log(mean_i exp(log_likelihoods_i))``, computed
from the matrices the members already served, each member scored once. Members trained on
different alignments have different priors, and the mean of their posteriors has no one prior
to divide by: such an ensemble is refused (DataError naming both exports), as are members with
different senone counts.
"""

import numpy as np

from tfblend.errors import DataError

# Priors counted on one training set are equal bit for bit; this only absorbs JSON round trips.
PRIOR_TOLERANCE = 1e-6


class Ensemble:
    """Accumulates an ensemble's log-likelihoods as its members' matrices are computed.

    A running log-sum-exp over members holds one ``[T, K]`` matrix per utterance, however many
    members there are; members' own matrices can be freed once added.

    Args:
      name: the ensemble's name (for messages).
      members: member name -> its ``tfblend.decoding.decoder.ExportScorer`` (anything with
        ``export_dir``, ``num_classes`` and float32 ``[K]`` ``log_priors``); at least two.

    Raises DataError naming the ensemble and the two exports when members score different
    senone counts or were exported with different priors.
    """

    def __init__(self, name: str, members: dict):
        if len(members) < 2:
            raise DataError(f"ensemble {name}: needs at least two members, got {list(members)}")
        self.name = name
        self.members = list(members)
        first_name, first = next(iter(members.items()))
        for other_name, other in members.items():
            pair = f"{first_name} ({first.export_dir}) and {other_name} ({other.export_dir})"
            if other.num_classes != first.num_classes:
                raise DataError(
                    f"ensemble {name}: members {pair} score {first.num_classes} and "
                    f"{other.num_classes} senones"
                )
            gap = float(np.max(np.abs(other.log_priors - first.log_priors)))
            if gap > PRIOR_TOLERANCE:
                raise DataError(
                    f"ensemble {name}: members {pair} were exported with different senone "
                    f"priors (log priors differ by up to {gap:.3g}); ensemble models trained "
                    "on the same training set"
                )
        self.log_prior = first.log_priors
        self._sums = {}
        self._added = []

    def add(self, member: str, loglikes: dict) -> None:
        """Adds member ``member``'s ``{utt_id: float32 [T, K]}`` log-likelihoods (every member
        must give the same utterances, with the same frame counts)."""
        if member not in self.members or member in self._added:
            raise ValueError(f"ensemble {self.name}: {member!r} is not a member still to add")
        if self._added and set(loglikes) != set(self._sums):
            raise DataError(
                f"ensemble {self.name}: member {member} scored other utterances than "
                f"{self._added[0]}"
            )
        for utt_id, matrix in loglikes.items():
            matrix = np.asarray(matrix, np.float32)
            if not self._added:
                self._sums[utt_id] = matrix.copy()
                continue
            total = self._sums[utt_id]
            if total.shape != matrix.shape:
                raise DataError(
                    f"ensemble {self.name}: {utt_id} has {matrix.shape} log-likelihoods from "
                    f"{member} but {total.shape} from {self._added[0]}"
                )
            np.logaddexp(total, matrix, out=total)
        self._added.append(member)

    def loglikes(self) -> dict:
        """``{utt_id: float32 [T, K]}``: ``log(mean_i posterior_i) - log prior``, once every
        member was added."""
        missing = [m for m in self.members if m not in self._added]
        if missing:
            raise ValueError(f"ensemble {self.name}: members {missing} were not added")
        offset = np.float32(np.log(len(self.members)))
        return {utt_id: total - offset for utt_id, total in self._sums.items()}


def parse_ensembles(
    specs: dict, exports: dict, arks: dict, serving_only: dict | None = None
) -> dict:
    """``{name: [member, ...]}`` from ``{name: "A+B[+C]"}`` (``tfblend.steps.decode
    --ensemble=NAME=A+B``), where members are names of ``exports`` (name -> export dir: the
    --model exports, decoded themselves) or of ``serving_only`` (the --member exports, which
    only serve ensembles).

    Raises DataError naming the flag value for a name already taken by an export or an ark
    (``arks``: name -> ark), fewer than two members, a member named twice, a member that is
    an ark (it stores no priors) or no export at all, a --member that is also a --model, or a
    --member of no ensemble.
    """
    serving_only = serving_only or {}
    for name in serving_only:
        if name in exports:
            raise DataError(f"--member={name}: {name!r} is already the name of a --model")
    exports = {**exports, **serving_only}
    out = {}
    for name, spec in specs.items():
        members = spec.split("+")
        where = f"--ensemble={name}={spec}"
        if name in exports or name in arks:
            raise DataError(f"{where}: {name!r} is already the name of a --model or --loglikes")
        if len(members) < 2:
            raise DataError(f"{where}: an ensemble needs at least two members (NAME=A+B)")
        if len(set(members)) != len(members):
            raise DataError(f"{where}: names a member twice")
        for member in members:
            if member in arks:
                raise DataError(
                    f"{where}: {member!r} is a --loglikes ark; members must be --model exports "
                    "(the senone priors are read from the export)"
                )
            if member not in exports:
                raise DataError(
                    f"{where}: {member!r} is not a --model or --member (exports: {list(exports)})"
                )
        out[name] = members
    for name in serving_only:
        if not any(name in members for members in out.values()):
            raise DataError(f"--member={name}: {name!r} is a member of no --ensemble")
    return out
