"""The senone inventory of a CMU Sphinx acoustic model, read from its binary model definition.

The model definition (``mdef``) of a Sphinx model lists its context-independent (base) phones,
its triphones, and for every phone the senones (tied HMM states) of its emitting states. Frame
labels from the pocketsphinx aligner are senone ids; evaluation needs the function that maps
each senone to its base phone (and HMM state), which is read from here and never hard-coded.

Only the binary little-endian format that pocketsphinx ships (``BMDF``) is read.
"""

import dataclasses
import functools
import os
import struct

import numpy as np

from tfblend.errors import DataError

_MAGIC = b"BMDF"
_HEADER_FIELDS = (
    "n_ciphone",
    "n_phone",
    "n_emit_state",
    "n_ci_sen",
    "n_sen",
    "n_tmat",
    "n_sseq",
    "n_ctx",
    "n_cd_tree",
    "sil",
)


@dataclasses.dataclass(frozen=True, eq=False)
class SenoneModel:
    """The senones of an acoustic model and the base phone and HMM state each belongs to.

    Attributes:
      phone_names: the base (context-independent) phone names, indexed by phone id; includes
        the silence phone and the filler phones (``+NSN+``, ``+SPN+`` in the en-us model).
      senone_to_phone: int64 ``[num_senones]``, the base phone id of every senone.
      senone_to_state: int64 ``[num_senones]``, the emitting state (0 .. states-1) of every senone.
      num_ci_senones: the context-independent senones, which come first.
      num_states: emitting states per phone.
      silence_phone: the phone id of silence.
      path: the file it was read from.
      phones: every phone of the model (CI phones first, then triphones), a structured array
        ``[n_phone]`` with int64 fields ``base``, ``left``, ``right`` (base phone ids; -1 for a
        CI phone), ``position`` (word position: 0 internal, 1 begin, 2 end, 3 single; -1 for a
        CI phone), ``tmat`` (transition matrix id) and ``senones`` (``[num_states]``).
    """

    phone_names: tuple[str, ...]
    senone_to_phone: np.ndarray
    senone_to_state: np.ndarray
    num_ci_senones: int
    num_states: int
    silence_phone: int
    path: str
    phones: np.ndarray | None = None

    @property
    def num_senones(self) -> int:
        """The number of senones (CI + CD), i.e. the number of frame-label classes."""
        return int(self.senone_to_phone.shape[0])

    @property
    def num_phones(self) -> int:
        """The number of base phones."""
        return len(self.phone_names)

    def phones_of(self, senones: np.ndarray) -> np.ndarray:
        """Maps senone ids (int array of any shape) to base phone ids (int64, same shape)."""
        return self.senone_to_phone[np.asarray(senones)]


def read_mdef(path: str) -> SenoneModel:
    """Reads a binary Sphinx model definition (the ``mdef`` file of a pocketsphinx model).

    Raises DataError naming the file when it is missing, not a little-endian binary mdef, truncated,
    or inconsistent (a senone shared by two base phones or two states, or a senone of no phone).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the model definition: {e.strerror}") from e
    try:
        return _parse(data, path)
    except DataError:
        raise
    except (struct.error, ValueError, IndexError) as e:
        raise DataError(f"{path}: truncated or corrupt binary model definition ({e})") from e


def _parse(data: bytes, path: str) -> SenoneModel:
    if data[:4] != _MAGIC:
        raise DataError(f"{path}: not a little-endian binary Sphinx model definition (no BMDF)")
    _version, text_length = struct.unpack_from("<ii", data, 4)
    offset = 12 + text_length  # skip the format description text
    header = dict(zip(_HEADER_FIELDS, struct.unpack_from("<10i", data, offset), strict=True))
    offset += 40
    if header["n_emit_state"] <= 0:
        raise DataError(f"{path}: phones with different numbers of states are not supported")
    names = []
    for _ in range(header["n_ciphone"]):
        end = data.index(b"\0", offset)
        names.append(data[offset:end].decode("ascii"))
        offset = end + 1
    offset = (offset + 3) // 4 * 4
    offset += 8 * header["n_cd_tree"]  # the triphone lookup tree: not needed here
    phones = np.frombuffer(
        data,
        dtype=[("ssid", "<i4"), ("tmat", "<i4"), ("attr", "u1", (4,))],
        count=header["n_phone"],
        offset=offset,
    )
    offset += phones.nbytes
    (sseq_count,) = struct.unpack_from("<i", data, offset)
    offset += 4
    if sseq_count != header["n_sseq"] * header["n_emit_state"]:
        raise DataError(
            f"{path}: senone sequence table has {sseq_count} entries, expected "
            f"{header['n_sseq']} x {header['n_emit_state']}"
        )
    sseq = np.frombuffer(data, dtype="<i2", count=sseq_count, offset=offset)
    sseq = sseq.reshape(header["n_sseq"], header["n_emit_state"]).astype(np.int64)
    if offset + sseq.size * 2 != len(data):
        raise DataError(f"{path}: {len(data) - offset - sseq.size * 2} unexpected trailing bytes")

    n_ci, n_sen = header["n_ciphone"], header["n_sen"]
    # A triphone's base phone is the first of its context bytes (base, left, right).
    base = np.concatenate([np.arange(n_ci), phones["attr"][n_ci:, 1].astype(np.int64)])
    senones = sseq[phones["ssid"]]  # [n_phone, n_emit_state]
    states = np.broadcast_to(np.arange(header["n_emit_state"]), senones.shape)
    owners = np.broadcast_to(base[:, None], senones.shape)
    senone_to_phone = np.full(n_sen, -1, np.int64)
    senone_to_state = np.full(n_sen, -1, np.int64)
    senone_to_phone[senones.ravel()] = owners.ravel()
    senone_to_state[senones.ravel()] = states.ravel()
    if (senone_to_phone < 0).any():
        raise DataError(f"{path}: {(senone_to_phone < 0).sum()} senones belong to no phone")
    if (senone_to_phone[senones] != owners).any() or (senone_to_state[senones] != states).any():
        raise DataError(f"{path}: a senone is shared by two base phones or two states")
    senone_to_phone.flags.writeable = False
    senone_to_state.flags.writeable = False
    table = np.zeros(
        header["n_phone"],
        [(n, np.int64) for n in ("base", "left", "right", "position", "tmat")]
        + [("senones", np.int64, (header["n_emit_state"],))],
    )
    table["base"] = base
    cd = slice(n_ci, None)
    table["left"][:n_ci] = table["right"][:n_ci] = table["position"][:n_ci] = -1
    table["left"][cd], table["right"][cd] = phones["attr"][cd, 2], phones["attr"][cd, 3]
    table["position"][cd] = phones["attr"][cd, 0]
    table["tmat"] = phones["tmat"]
    table["senones"] = senones
    table.flags.writeable = False
    return SenoneModel(
        phone_names=tuple(names),
        senone_to_phone=senone_to_phone,
        senone_to_state=senone_to_state,
        num_ci_senones=header["n_ci_sen"],
        num_states=header["n_emit_state"],
        silence_phone=header["sil"],
        path=path,
        phones=table,
    )


def default_model_dir() -> str:
    """The directory of pocketsphinx's bundled US English acoustic model (``.../en-us/en-us``)."""
    import pocketsphinx

    return os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us")


def default_dictionary() -> str:
    """The path of pocketsphinx's bundled pronunciation dictionary (``cmudict-en-us.dict``)."""
    import pocketsphinx

    return os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")


@functools.cache
def default_senone_model() -> SenoneModel:
    """The senone model of pocketsphinx's en-us acoustic model (read once, then cached)."""
    return read_mdef(os.path.join(default_model_dir(), "mdef"))
