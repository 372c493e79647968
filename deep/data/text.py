"""Yahoo Answers text data in the format of He et al. (2019), "Lagging inference networks" (paper section 5.2).

Files under ``<data root>/yahoo/`` (data root: :func:`linvae.dataroot.resolve_data_root`):

* ``yahoo.train.txt`` (100,000 documents), ``yahoo.valid.txt`` and ``yahoo.test.txt`` (10,000 each): one
  document a line, already whitespace-tokenised and lower-cased; unknown words are written ``_UNK``.
* ``vocab.txt`` (optional): one word a line (19,997 words in the published copy, ``_UNK`` included).

Vocabulary: the four specials ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, then the words of
``vocab.txt`` in file order (or, without it, of the training split by decreasing frequency).  ``_UNK``
is an alias of ``<unk>``: the published 19,997-word list gives a vocabulary of 20,000 ids.

A document of n words is stored as ``<s> w_1 ... w_n </s>`` (length ``n + 2``); every split lives in
memory as ONE padded int32 tensor ``(N, L_max)`` plus a lengths tensor ``(N,)``, and
:meth:`TextSplit.get_batch` slices it (no Python loop over tokens after loading).  The decoder predicts
``n + 1`` tokens per document (the words and ``</s>``): that is the token count of every per-token
figure (perplexity) in this project.

Protocols (``train_split`` option):

* ``"train"`` (default, He et al.): train on ``yahoo.train.txt``, evaluate on ``yahoo.test.txt``.
* ``"valid"`` (reduced; the training file is not public at a stable address): the ``"train"`` split
  reads ``yahoo.valid.txt``; evaluate on ``yahoo.test.txt``.  The ``"valid"`` split is then the training
  data and must not be used for model selection.

The data are not downloadable by this code: He et al. distribute them as a Google Drive archive linked
from their repository's README, with no stable public URL.  ``download=True`` says so.
"""
from __future__ import annotations

import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from linvae.dataroot import DataIntegrityError, DatasetMissingError, resolve_data_root, verify_file

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "SPECIALS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "UNK_ALIASES",
    "YAHOO_FILES", "YAHOO_MD5", "YAHOO_SOURCE", "NO_URL_NOTE", "VOCAB_FILE", "TEXT_SPLITS",
    "TextOptionError", "YahooDownloadError",
    "Vocabulary", "TextBatch", "TextSplit", "load_split", "yahoo_dir", "encode_documents",
    "DatasetMissingError", "DataIntegrityError",
]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
#: Words that mean "unknown" in the source files (mapped to ``<unk>``).
UNK_ALIASES: tuple[str, ...] = ("_UNK",)

TEXT_SPLITS: tuple[str, ...] = ("train", "valid", "test")
YAHOO_FILES: dict[str, str] = {s: f"yahoo.{s}.txt" for s in TEXT_SPLITS}
VOCAB_FILE = "vocab.txt"
#: md5 of the published files (the training file's is not known here).
YAHOO_MD5: dict[str, str] = {
    "yahoo.valid.txt": "2680dd89b4fe882359846b5accfb7647",
    "yahoo.test.txt": "3e6dcb643282e3543303980f1e21bb9d",
    "vocab.txt": "2c17c7120e6240d34d19490404b5133d",
}
YAHOO_SOURCE = ("the data archive linked from the README of https://github.com/jxhe/vae-lagging-encoder "
                "(He et al. 2019, 'Lagging Inference Networks and Posterior Collapse in VAEs')")
NO_URL_NOTE = ("that archive is a Google Drive file with no stable public URL, so this code cannot "
               "download it")
DEFAULT_BUCKET_BATCHES = 50


class TextOptionError(ValueError):
    """An invalid option of the text loader (the message names the option and the valid values)."""


class YahooDownloadError(DatasetMissingError):
    """``download=True`` for Yahoo: there is no stable public URL to download from."""


# =========================================================================== vocabulary

class Vocabulary:
    """Word <-> id map with the specials ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3 first.

    ``words`` are added in order (duplicates, empty strings, specials and ``unk_aliases`` skipped);
    the aliases map to ``<unk>``.  ``source`` says where the list came from (for result files).
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, words: Iterable[str], *, unk_aliases: Sequence[str] = UNK_ALIASES,
                 source: str = "") -> None:
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(SPECIALS)}
        self.unk_aliases = tuple(unk_aliases)
        for alias in self.unk_aliases:
            self.stoi[alias] = UNK_ID
        for w in words:
            if w and w not in self.stoi:
                self.stoi[w] = len(self.itos)
                self.itos.append(w)
        self.source = source

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> "Vocabulary":
        """One word a line (only the first whitespace-separated field counts, so ``word count``
        files work too)."""
        path = Path(path)
        words = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if fields:
                    words.append(fields[0])
        return cls(words, source=f"file {path.name}", **kwargs)

    @classmethod
    def from_documents(cls, documents: Iterable[Sequence[str]], *, max_size: int | None = None,
                       source: str = "", **kwargs: Any) -> "Vocabulary":
        """Words of tokenised ``documents`` by decreasing count (ties: first occurrence); at most
        ``max_size`` words besides the specials."""
        counts: Counter[str] = Counter()
        for doc in documents:
            counts.update(doc)
        aliases = set(kwargs.get("unk_aliases", UNK_ALIASES)) | set(SPECIALS)
        ranked = [w for w, _ in counts.most_common() if w not in aliases]
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(ranked, source=source, **kwargs)

    # -- use -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, source={self.source!r})"

    def encode(self, words: Sequence[str]) -> list[int]:
        """Ids of ``words`` (unknown words -> ``<unk>``); no ``<s>`` / ``</s>`` added."""
        get = self.stoi.get
        return [get(w, UNK_ID) for w in words]

    def decode(self, ids: Iterable[int], *, strip: bool = True) -> list[str]:
        """Words of ``ids``; ``strip`` drops ``<pad>`` and ``<s>`` and stops at the first ``</s>``."""
        out = []
        for i in (int(t) for t in ids):
            if strip:
                if i == EOS_ID:
                    break
                if i in (PAD_ID, BOS_ID):
                    continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    @property
    def digest(self) -> str:
        """md5 of the id -> word list: two vocabularies with the same digest give the same ids."""
        import hashlib

        return hashlib.md5("\n".join(self.itos).encode("utf-8")).hexdigest()

    def meta(self) -> dict:
        return {"size": len(self), "source": self.source, "specials": list(SPECIALS),
                "unk_aliases": list(self.unk_aliases), "digest": self.digest}


# =========================================================================== batches and splits

@dataclass(frozen=True)
class TextBatch:
    """A batch of documents: ``tokens`` ``(B, T)`` int64 (``<s> ... </s>`` then ``<pad>``, T = the
    longest document of the batch) and ``lengths`` ``(B,)`` int64 (``<s>`` and ``</s>`` included)."""

    tokens: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def shape(self) -> torch.Size:
        """Shape of ``tokens`` (so ``batch.shape[0]`` is the batch size, as for image tensors)."""
        return self.tokens.shape

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def target_counts(self) -> torch.Tensor:
        """Predicted tokens per document ``(B,)``: the words and ``</s>`` (``lengths - 1``)."""
        return self.lengths - 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TextBatch":
        return TextBatch(self.tokens.to(device, non_blocking=non_blocking),
                         self.lengths.to(device, non_blocking=non_blocking))

    def select(self, index: torch.Tensor) -> "TextBatch":
        """Rows ``index`` (may repeat), keeping the width T."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        return TextBatch(self.tokens.index_select(0, index), self.lengths.index_select(0, index))


def encode_documents(documents: Sequence[Sequence[str]], vocab: Vocabulary,
                     max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Encode tokenised documents to a padded int32 tensor ``(N, L)`` (``<s> ... </s>``, pad 0) and
    int64 lengths ``(N,)``; documents longer than ``max_length`` words are cut to their first
    ``max_length`` words.  Returns ``(tokens, lengths, n_truncated)``."""
    n = len(documents)
    words = np.fromiter((len(d) for d in documents), dtype=np.int64, count=n)
    get = vocab.stoi.get
    flat = np.fromiter((get(w, UNK_ID) for d in documents for w in d), dtype=np.int32,
                       count=int(words.sum()))
    kept = words if max_length is None else np.minimum(words, max_length)
    n_truncated = int((kept < words).sum())
    starts = np.concatenate([[0], np.cumsum(words)[:-1]]) if n else np.zeros(0, dtype=np.int64)
    position = np.arange(flat.size) - np.repeat(starts, words)
    row = np.repeat(np.arange(n), words)
    keep = position < np.repeat(kept, words)
    width = int(kept.max()) + 2 if n else 2
    out = np.full((n, width), PAD_ID, dtype=np.int32)
    out[:, 0] = BOS_ID
    out[row[keep], position[keep] + 1] = flat[keep]
    out[np.arange(n), kept + 1] = EOS_ID
    return torch.from_numpy(out), torch.from_numpy(kept + 2), n_truncated


class TextSplit:
    """One split of a text data set in memory: ``tokens`` ``(N, L)`` int32, ``lengths`` ``(N,)`` int64.

    :meth:`get_batch` returns a :class:`TextBatch` trimmed to the batch's longest document;
    :meth:`batches` groups a shuffled index into length-bucketed batches.
    """

    def __init__(self, name: str, split: str, tokens: torch.Tensor, lengths: torch.Tensor,
                 vocab: Vocabulary, *, protocol: str, source_files: Sequence[str | os.PathLike] = (),
                 notes: Sequence[str] = (), bucket_batches: int = DEFAULT_BUCKET_BATCHES,
                 extra: dict[str, Any] | None = None) -> None:
        if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
            raise ValueError(f"tokens must be (N, L) and lengths (N,); got {tuple(tokens.shape)} and "
                             f"{tuple(lengths.shape)}")
        self.name = name
        self.split = split
        self.tokens = tokens
        self.lengths = lengths.to(torch.long)
        self.vocab = vocab
        self.protocol = protocol
        self.source_files = [str(p) for p in source_files]
        self.notes = list(notes)
        self.bucket_batches = int(bucket_batches)
        self.extra = dict(extra or {})

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return (f"TextSplit({self.name!r}, {self.split!r}, n={len(self)}, vocab={len(self.vocab)}, "
                f"protocol={self.protocol!r})")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def n_tokens(self) -> int:
        """Predicted tokens in the split: words plus one ``</s>`` per document."""
        return int((self.lengths - 1).sum())

    @property
    def n_words(self) -> int:
        return int((self.lengths - 2).sum())

    def _index(self, index: torch.Tensor | Sequence[int] | np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"{self.name}/{self.split}: index out of range for {n} documents "
                             f"(got {int(idx.min())}..{int(idx.max())})")
        return idx

    def get_batch(self, index: torch.Tensor | Sequence[int] | np.ndarray, *, train: bool = False,
                  generator: torch.Generator | None = None) -> TextBatch:
        """Documents at ``index`` ``(B,)`` as a :class:`TextBatch` ``(B, T)``, T = their longest length.

        ``train`` and ``generator`` are accepted for the data contract; text batches are deterministic.
        """
        idx = self._index(index)
        lengths = self.lengths.index_select(0, idx)
        width = int(lengths.max()) if idx.numel() else 2
        tokens = self.tokens.index_select(0, idx)[:, :width].to(torch.long)
        return TextBatch(tokens, lengths)

    def batches(self, perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """Length bucketing: cut ``perm`` into pools of ``bucket_batches * batch_size`` documents, sort
        each pool by length (stable), cut it into batches, then shuffle the order of all batches.

        Returns exactly ``ceil(len(perm) / batch_size)`` index tensors that together hold every entry of
        ``perm`` once.  The batch order is shuffled by a generator seeded with a checksum of ``perm``, so
        it is a deterministic function of ``perm`` (and as random as ``perm``): no extra random state
        to checkpoint.  ``bucket_batches <= 1`` keeps ``perm``'s order (no bucketing).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        perm = torch.as_tensor(perm, dtype=torch.long).reshape(-1).cpu()
        if perm.numel() == 0:
            return []
        if self.bucket_batches <= 1:
            return list(perm.split(batch_size))
        pool = batch_size * self.bucket_batches
        out: list[torch.Tensor] = []
        for chunk in perm.split(pool):
            order = torch.argsort(self.lengths.index_select(0, chunk), stable=True)
            out.extend(chunk[order].split(batch_size))
        seed = zlib.crc32(perm.numpy().tobytes())
        shuffle = torch.randperm(len(out), generator=torch.Generator().manual_seed(seed))
        return [out[i] for i in shuffle.tolist()]

    def evaluation_batches(self, index: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """Evaluation batches of ``index``: sorted by length (stable), then cut into ``batch_size`` documents
        (little padding, and the same batches every time)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
        return list(index[torch.argsort(self.lengths.index_select(0, index), stable=True)].split(batch_size))

    def documents(self, index: torch.Tensor | Sequence[int]) -> list[str]:
        """The documents at ``index`` as text (``<unk>`` for unknown words)."""
        idx = self._index(index)
        return [" ".join(self.vocab.decode(self.tokens[i, :int(self.lengths[i])].tolist())) for i in idx]

    def meta(self) -> dict[str, Any]:
        """JSON-able description: name, split, n, token counts, protocol, vocabulary, source files."""
        return {"name": self.name, "split": self.split, "n": len(self), "n_tokens": self.n_tokens,
                "n_words": self.n_words, "max_length": int(self.lengths.max()) if len(self) else 0,
                "mean_words": self.n_words / max(1, len(self)),
                "token_convention": "n_tokens counts the words and one </s> per document (the tokens the "
                                    "decoder predicts; <s> and padding are not counted)",
                "protocol": self.protocol, "vocab": self.vocab.meta(), "source_files": list(self.source_files),
                "bucket_batches": self.bucket_batches, "notes": list(self.notes), **self.extra}


# =========================================================================== loading

_OPTIONS = {"train_split", "vocab", "max_length", "max_vocab", "verify", "bucket_batches"}
_COUNT_CACHE: dict[tuple[str, int, int], int] = {}


def yahoo_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``<data root>/yahoo``."""
    return resolve_data_root(data_dir) / "yahoo"


def _as_int(name: str, value: Any, minimum: int) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
        return None
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        out = int(float(value))
    except (TypeError, ValueError):
        raise TextOptionError(f"option {name} must be an integer >= {minimum} (or None), got {value!r}") from None
    if out < minimum:
        raise TextOptionError(f"option {name} must be an integer >= {minimum} (or None), got {value!r}")
    return out


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TextOptionError(f"option {name} must be true or false, got {value!r}")


def _missing(folder: Path, missing: Sequence[str], train_split: str) -> DatasetMissingError:
    files = ", ".join(YAHOO_FILES.values())
    msg = (f"yahoo: missing file(s) {', '.join(missing)} in {folder}. The Yahoo data set is the three files "
           f"{files} (one document a line, whitespace-tokenised) and optionally {VOCAB_FILE}, expected in "
           f"<data root>/yahoo/ (data root: --data-dir, else $MRVAE_DATA, else ~/.cache/mrvae/data). "
           f"Get them from {YAHOO_SOURCE}; {NO_URL_NOTE}.")
    if train_split == "train" and YAHOO_FILES["train"] in missing and (folder / YAHOO_FILES["valid"]).exists():
        msg += (f" Without {YAHOO_FILES['train']} use the reduced protocol: --data-option train_split=valid "
                f"(train on {YAHOO_FILES['valid']}, evaluate on {YAHOO_FILES['test']}).")
    return DatasetMissingError(msg)


def _read_documents(path: Path) -> tuple[list[list[str]], int]:
    """Tokenised non-blank lines of ``path`` and the number of blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    docs = [line.split() for line in lines]
    kept = [d for d in docs if d]
    return kept, len(docs) - len(kept)


def _count_documents(path: Path) -> int:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _COUNT_CACHE:
        with open(path, encoding="utf-8") as f:
            _COUNT_CACHE[key] = sum(1 for line in f if line.strip())
    return _COUNT_CACHE[key]


def _verify(path: Path) -> str | None:
    """The published md5 of ``path`` once the file matches it (hashed on first use only); ``None`` for a
    file without one. Raises :class:`DataIntegrityError` naming the file and the expected md5."""
    expected = YAHOO_MD5.get(path.name)
    if expected is None:
        return None
    verify_file(path, dataset="yahoo", algorithm="md5", expected=expected,
                source=f"the published file, from {YAHOO_SOURCE}")
    return expected


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None, download: bool = False,
               train_split: str = "train", vocab: str = "auto", max_length: int | None = None,
               **options: Any) -> TextSplit:
    """Load split ``split`` (``"train"``, ``"valid"`` or ``"test"``) of the Yahoo data set (``name="yahoo"``).

    Options
    -------
    train_split: file read for the ``"train"`` split: ``"train"`` (He et al.; ``yahoo.train.txt``) or
        ``"valid"`` (reduced protocol: train on ``yahoo.valid.txt``, evaluate on ``yahoo.test.txt``).
    vocab: ``"auto"`` (``vocab.txt`` when present, else built from the training file), ``"file"``
        (``vocab.txt``, required), ``"train"`` (built from the training file) or a path to a word list.
        Every split of one setting gets the same vocabulary (it never depends on the split loaded).
    max_length: cut documents to their first ``max_length`` words (default: keep all; Yahoo has <= 200).
    max_vocab: with a built vocabulary, keep the ``max_vocab`` most frequent words.
    verify: check the md5 of the published files (default True; hashed on first use only;
        ``DataIntegrityError`` on mismatch).
    bucket_batches: batches per length-sorting pool in :meth:`TextSplit.batches` (default 50; <= 1: none).

    Raises :class:`deep.data.images.UnknownDatasetError` (name), :class:`TextOptionError` (split / option),
    :class:`DatasetMissingError` (a file is absent; ``download=True`` raises :class:`YahooDownloadError`,
    because there is no stable public URL).
    """
    if name != "yahoo":
        from deep.data.images import UnknownDatasetError

        raise UnknownDatasetError(f"unknown text dataset {name!r}; the text loader knows only 'yahoo'")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TextOptionError(f"unknown option(s) {sorted(unknown)} for yahoo; accepted: {sorted(_OPTIONS)}")
    if split not in TEXT_SPLITS:
        raise TextOptionError(f"unknown split {split!r} for yahoo; choose one of {', '.join(TEXT_SPLITS)}")
    if train_split not in ("train", "valid"):
        raise TextOptionError(f"option train_split must be 'train' (He et al.) or 'valid' (reduced protocol: "
                              f"train on yahoo.valid.txt, evaluate on yahoo.test.txt), got {train_split!r}")
    max_length = _as_int("max_length", max_length, 1)
    max_vocab = _as_int("max_vocab", options.get("max_vocab"), 1)
    verify = _as_bool("verify", options.get("verify", True))
    bucket_batches = _as_int("bucket_batches", options.get("bucket_batches", DEFAULT_BUCKET_BATCHES), 0)
    if not isinstance(vocab, (str, os.PathLike)):
        raise TextOptionError(f"option vocab must be 'auto', 'file', 'train' or a path, got {vocab!r}")

    folder = yahoo_dir(data_dir)
    file_split = train_split if split == "train" else split
    path = folder / YAHOO_FILES[file_split]
    train_path = folder / YAHOO_FILES[train_split]
    vocab_path = folder / VOCAB_FILE
    vocab_mode = str(vocab)
    if vocab_mode == "auto":
        vocab_mode = "file" if vocab_path.exists() else "train"
    needed = [path]
    if vocab_mode == "file":
        needed.append(vocab_path)
    elif vocab_mode == "train":
        needed.append(train_path)
    else:
        vocab_path = Path(vocab_mode).expanduser()
        if not vocab_path.exists():
            raise DatasetMissingError(f"yahoo: vocabulary file {vocab_path} (option vocab) does not exist")
    missing = [p.name for p in dict.fromkeys(needed) if not p.exists()]
    if missing:
        if download:
            raise YahooDownloadError(
                f"yahoo: cannot download {', '.join(missing)}: there is no stable public URL for the Yahoo "
                f"data of He et al. 2019. Get the files by hand from {YAHOO_SOURCE} and put them in {folder} "
                "(or point --data-dir / $MRVAE_DATA at a folder with a yahoo/ subfolder).")
        raise _missing(folder, missing, train_split)

    digests: dict[str, str] = {}
    if verify:
        for p in dict.fromkeys(needed):
            got = _verify(p)
            if got:
                digests[p.name] = got

    docs, blank = _read_documents(path)
    if vocab_mode == "train":
        train_docs = docs if train_path == path else _read_documents(train_path)[0]
        voc = Vocabulary.from_documents(train_docs, max_size=max_vocab,
                                        source=f"built from {train_path.name} (by frequency)")
    else:
        if max_vocab is not None:
            raise TextOptionError("option max_vocab applies only to a vocabulary built from the training file "
                                  "(vocab='train'); it was given with a vocabulary file")
        voc = Vocabulary.from_file(vocab_path)
    tokens, lengths, n_cut = encode_documents(docs, voc, max_length)

    n_train = len(docs) if path == train_path else (_count_documents(train_path) if train_path.exists() else None)
    trained = f"{train_path.name} ({n_train:,} docs)" if n_train is not None else train_path.name
    if train_split == "valid":
        protocol = f"reduced: trained on {trained}, evaluated on {YAHOO_FILES['test']}"
    else:
        protocol = f"He et al. 2019: trained on {trained}, evaluated on {YAHOO_FILES['test']}"
    notes = []
    if split != "train" or file_split != "train":
        notes.append(f"this split: {path.name} ({len(docs):,} docs)")
    if train_split == "valid" and split == "valid":
        notes.append("under the reduced protocol the valid split IS the training data: do not use it for "
                     "validation or model selection")
    if blank:
        notes.append(f"skipped {blank} blank line(s)")
    if n_cut:
        notes.append(f"{n_cut} document(s) cut to their first {max_length} words")
    unk_rate = float((tokens == UNK_ID).sum()) / max(1, int((lengths - 2).sum()))
    sources = [str(p) for p in dict.fromkeys(needed)]
    return TextSplit("yahoo", split, tokens, lengths, voc, protocol=protocol, source_files=sources,
                     notes=notes, bucket_batches=bucket_batches if bucket_batches is not None else 0,
                     extra={"file": path.name, "train_split": train_split, "reduced_protocol": train_split == "valid",
                            "unk_rate": unk_rate, "max_length_option": max_length,
                            "md5": digests or None})
