"""The HMMs of a Sphinx acoustic model: triphone -> senones, and the transition probabilities.

Every phone of the en-us model is a 3-state left-to-right HMM with self-loops and no skips. The
senones of a phone in context come from the mdef's triphone table, looked up with pocketsphinx's
own back-off order when the exact triphone is absent (``bin_mdef_phone_id_nearest``: other word
positions; then silence for a filler context, and for the left context of a word-initial phone
and the right context of a word-final one; then the context-independent phone). The
transition matrices (``transition_matrices``, Sphinx's binary ``s3`` format) hold counts:
rows are normalised here.

Word positions are the mdef's: 0 internal, 1 begin, 2 end, 3 single (a one-phone word).
"""

import os
import struct

import numpy as np

from tfblend.corpus import mdef as mdef_lib
from tfblend.errors import DataError

INTERNAL, BEGIN, END, SINGLE = 0, 1, 2, 3
POSITION_TAGS = ("I", "B", "E", "S")
_BYTE_ORDER_MAGIC = 0x11223344


def read_transition_matrices(path: str) -> np.ndarray:
    """Reads a Sphinx binary ``transition_matrices`` file.

    Returns float64 ``[n_tmat, n_states, n_states + 1]``: row-normalised transition
    probabilities (the last column is the exit). Raises DataError naming the file when it is
    not such a file or a row holds no counts.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the transition matrices: {e.strerror}") from e
    end = data.find(b"endhdr\n")
    if not data.startswith(b"s3\n") or end < 0:
        raise DataError(f"{path}: not a Sphinx binary transition matrix file (no s3 header)")
    offset = end + len(b"endhdr\n")
    try:
        (magic,) = struct.unpack_from("<I", data, offset)
        if magic != _BYTE_ORDER_MAGIC:
            raise DataError(f"{path}: not little-endian (byte-order word {magic:#x})")
        n_tmat, n_src, n_dst, count = struct.unpack_from("<4i", data, offset + 4)
        if n_dst != n_src + 1 or count != n_tmat * n_src * n_dst:
            raise DataError(f"{path}: unexpected shape {n_tmat} x {n_src} x {n_dst} ({count})")
        values = np.frombuffer(data, "<f4", count=count, offset=offset + 20)
    except struct.error as e:
        raise DataError(f"{path}: truncated transition matrix file ({e})") from e
    except ValueError as e:
        raise DataError(f"{path}: truncated transition matrix file ({e})") from e
    counts = values.astype(np.float64).reshape(n_tmat, n_src, n_dst)
    totals = counts.sum(axis=2, keepdims=True)
    if (totals <= 0).any():
        raise DataError(f"{path}: a transition matrix row holds no counts")
    return counts / totals


class Topology:
    """Senones and transition probabilities of every phone in context.

    Args:
      model: the senone model (mdef) with its phone table.
      transitions: float64 ``[n_tmat, S, S + 1]`` (:func:`read_transition_matrices`).

    Attributes:
      model, transitions: as given.
      speech_phones: the base phone ids that words are spelled with (all but silence and the
        fillers ``+NSN+``, ``+SPN+``).
      silence: the base phone id of silence.
    """

    def __init__(self, model: mdef_lib.SenoneModel, transitions: np.ndarray):
        table = model.phones
        if table["tmat"].max() >= transitions.shape[0] or transitions.shape[1] != model.num_states:
            raise DataError(f"{model.path}: the transition matrices do not fit this mdef")
        self.model = model
        self.transitions = transitions
        self.silence = model.silence_phone
        names = model.phone_names
        self._fillers = frozenset(
            i for i, n in enumerate(names) if n.startswith("+") or i == model.silence_phone
        )
        self.speech_phones = tuple(i for i in range(len(names)) if i not in self._fillers)
        cd = np.arange(len(names), table.shape[0])
        keys = zip(
            table["base"][cd].tolist(),
            table["left"][cd].tolist(),
            table["right"][cd].tolist(),
            table["position"][cd].tolist(),
            strict=True,
        )
        self._index = dict(zip(keys, cd.tolist(), strict=True))
        # A senone's loop probability: its state's row of its phone's matrix (a senone belongs to
        # one base phone and one state, as read_mdef checks).
        states = np.arange(model.num_states)
        loops = transitions[table["tmat"]][:, states, states]  # [n_phone, S]
        self._loop = np.zeros(model.num_senones)
        self._loop[table["senones"].ravel()] = np.log(loops.ravel())

    def senones(self, base: int, left: int, right: int, position: int) -> np.ndarray:
        """The senones (int64 ``[S]``) of ``base`` between ``left`` and ``right`` (base phone ids;
        silence at an utterance's edge) at word ``position``, with pocketsphinx's back-off."""
        table = self.model.phones
        if base in self._fillers:
            return table["senones"][base]
        row = self._lookup(base, left, right, position)
        return table["senones"][base if row is None else row]

    def _lookup(self, base, left, right, position):
        others = (position, *(p for p in range(4) if p != position))
        for pos in others:
            row = self._index.get((base, left, right, pos))
            if row is not None:
                return row
        new_left = self.silence if left in self._fillers or position in (BEGIN, SINGLE) else left
        new_right = self.silence if right in self._fillers or position in (END, SINGLE) else right
        if (new_left, new_right) != (left, right):
            for pos in others:
                row = self._index.get((base, new_left, new_right, pos))
                if row is not None:
                    return row
        return None

    def self_loop_log_probs(self) -> np.ndarray:
        """float64 ``[num_senones]``: log P(stay) of the HMM state each senone belongs to."""
        return self._loop.copy()


def load_topology(model_dir: str | None = None) -> Topology:
    """The topology of a pocketsphinx acoustic model folder (default: the bundled en-us)."""
    model_dir = model_dir or mdef_lib.default_model_dir()
    model = mdef_lib.read_mdef(os.path.join(model_dir, "mdef"))
    return Topology(model, read_transition_matrices(os.path.join(model_dir, "transition_matrices")))
